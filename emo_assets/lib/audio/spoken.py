"""Real speech, offline: contact-centre sentences spoken by Debian's espeak-ng.

The demo day (:mod:`emo_assets.lib.audio.sample_day`) and the tests are made of it, so a real
voice-activity model finds their speech turns. espeak-ng is a system package (``apt-get install
espeak-ng``; ``make demo`` and ``make test`` install it); without it every function here raises
:class:`SpeechSynthesisError` naming that command. Nothing falls back to non-speech sound.

Same espeak-ng version and seed, same samples. Each distinct (sentence, voice, speed, pitch) is
spoken once per process and kept (a few hundred kilobytes in all).
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess

import numpy as np

# What people say on a support line: the agent's and the customer's sentences.
AGENT_SENTENCES = (
    "Hello, thank you for calling. How can I help you today?",
    "I am sorry to hear that. Let me look at it right away.",
    "I can see your order here. It was sent on Monday.",
    "I will send you a new one today, at no cost.",
    "Is there anything else I can help you with?",
    "Thank you for your patience. Have a good day.",
)
CUSTOMER_SENTENCES = (
    "My order arrived broken and nobody answered my emails.",
    "This is the third time I have called about it.",
    "I waited on hold for forty minutes this morning.",
    "Okay, that sounds good. When will it arrive?",
    "No, that is all. Thank you for your help.",
    "I would like to cancel my subscription, please.",
)
SENTENCES = (AGENT_SENTENCES[0], CUSTOMER_SENTENCES[0], AGENT_SENTENCES[1])
# espeak-ng's built-in voices (no MBROLA needed): accent and a variant for a different speaker.
VOICES = ("en-us", "en-gb-x-rp", "en-us+f3", "en-gb+f2", "en-us+m3", "en-gb-scotland", "en-029+f4")
AGENT_VOICE, CUSTOMER_VOICE = "en-gb-x-rp", "en-us+f3"
# Pauses between sentences are longer than the turn rule's 0.5 s, so each sentence is a turn.
PAUSE_S = (0.7, 1.2)
PEAK = 0.6


class SpeechSynthesisError(RuntimeError):
    """espeak-ng is missing or failed: the message says what to install or what it said."""


def say(text: str, voice: str = "en-us", sample_rate: int = 16000, words_per_minute: int = 150, pitch: int = 50):
    """``text`` spoken by espeak-ng as float32 mono at ``sample_rate``, trimmed to the speech: the
    sentence starts at the first sample and ends at the last. A new array each call."""
    native, rate = _espeak(text, voice, words_per_minute, pitch)
    if rate == sample_rate:
        return native.copy()
    import soxr

    return np.ascontiguousarray(soxr.resample(native, rate, sample_rate, quality="HQ"), dtype=np.float32)


@functools.lru_cache(maxsize=512)
def _espeak(text: str, voice: str, words_per_minute: int, pitch: int) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if shutil.which("espeak-ng") is None:
        raise SpeechSynthesisError(
            "espeak-ng is not installed; it speaks the sample recordings. Install it with "
            "`apt-get install espeak-ng` (Debian/Ubuntu; `make demo` and `make test` do this)"
        )
    command = ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-p", str(pitch), "--stdout", text]
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout:
        raise SpeechSynthesisError(
            f"espeak-ng could not speak {text!r} with voice {voice!r} (exit {done.returncode}): "
            f"{done.stderr.decode(errors='replace').strip()}"
        )
    samples, rate = sf.read(io.BytesIO(done.stdout), dtype="float32")
    samples = samples if samples.ndim == 1 else samples.mean(axis=1)
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    if loud.size == 0:
        raise SpeechSynthesisError(f"espeak-ng spoke {text!r} with voice {voice!r} as silence")
    trimmed = samples[loud[0] : loud[-1] + 1].astype(np.float32)
    trimmed.setflags(write=False)
    return trimmed, int(rate)


def _voice_of(rng: np.random.Generator, voice: str | None = None) -> tuple[str, int, int]:
    """A speaker: (voice, words per minute, pitch) drawn from ``rng`` (``voice`` given: only its pace)."""
    chosen = voice or str(rng.choice(VOICES))
    return chosen, int(rng.integers(135, 175)), int(rng.integers(35, 70))


def spoken_speech(
    seconds: float, sample_rate: int, rng: np.random.Generator | int = 0, channels: int = 1
) -> np.ndarray:
    """``seconds`` of one speaker saying contact-centre sentences with pauses between them, as float32
    ``(channels, n)`` with peak 0.6 and a faint noise floor. Speaker, sentences and pauses are drawn
    from ``rng``; speech starts within 0.1-0.25 s; a sentence still going at the end is cut there.
    Extra channels carry the same voice, slightly quieter (a mono call saved as stereo)."""
    rng = np.random.default_rng(rng)
    n = int(round(seconds * sample_rate))
    speaker = _voice_of(rng)
    signal = np.zeros(n, np.float32)
    at = int(rng.uniform(0.1, 0.25) * sample_rate)
    sentences = [*AGENT_SENTENCES, *CUSTOMER_SENTENCES]
    while at < n:
        speech = say(str(rng.choice(sentences)), speaker[0], sample_rate, *speaker[1:])
        take = min(len(speech), n - at)
        signal[at : at + take] = speech[:take]
        at += take + int(rng.uniform(*PAUSE_S) * sample_rate)
    return _finish(signal[np.newaxis], rng, channels)


def spoken_call(
    seconds: float,
    sample_rate: int,
    rng: np.random.Generator | int = 0,
    voices: tuple[str, str] = (AGENT_VOICE, CUSTOMER_VOICE),
) -> np.ndarray:
    """A two-channel support call: the agent (``voices[0]``) on the left, the customer on the right,
    taking turns (agent first) with pauses, float32 ``(2, n)``. Sentences and pace from ``rng``."""
    rng = np.random.default_rng(rng)
    n = int(round(seconds * sample_rate))
    agent, customer = _voice_of(rng, voices[0]), _voice_of(rng, voices[1])
    sides = np.zeros((2, n), np.float32)
    at = int(rng.uniform(0.1, 0.25) * sample_rate)
    turn = 0
    while at < n:
        side, speaker, lines = (0, agent, AGENT_SENTENCES) if turn % 2 == 0 else (1, customer, CUSTOMER_SENTENCES)
        speech = say(str(rng.choice(lines)), speaker[0], sample_rate, *speaker[1:])
        take = min(len(speech), n - at)
        sides[side, at : at + take] = speech[:take]
        at += take + int(rng.uniform(*PAUSE_S) * sample_rate)
        turn += 1
    return _finish(sides, rng, 2, copy_first=False)


def _finish(rows: np.ndarray, rng: np.random.Generator, channels: int, copy_first: bool = True) -> np.ndarray:
    """Peak ``PEAK``, a faint noise floor of its own on each channel (-54 dBFS, no digital silence)."""
    rows = PEAK * rows / max(float(np.abs(rows).max()), 1e-9)
    if copy_first and channels > 1:
        rows = np.concatenate([rows, np.repeat(0.9 * rows[:1], channels - 1, axis=0)])
    noise = 0.002 * rng.standard_normal(rows.shape)
    return np.clip(rows + noise, -1.0, 1.0).astype(np.float32)
