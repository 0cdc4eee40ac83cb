"""Two-channel calls: which voice is on which side, read from a ``channels.toml`` in the raw folders.

Contact-centre recordings are often stereo with the agent on one side and the customer on the
other; mixing them to mono blends two people's emotions. A folder under ``data/raw/<day>/`` (the
day folder itself, or any folder below it) may hold a ``channels.toml``::

    [channels]
    agent = "left"
    customer = "right"

It applies to every two-channel recording in that folder and below (the nearest file wins). Each
side becomes a 16 kHz mono FLAC of its own and is scored on its own; a side left unnamed keeps its
position as its name (``left`` or ``right``). A two-channel file whose sides are identical (a mono
recording saved as stereo) stays one ``mono`` recording, and so does every recording without a
config, or with one or more than two channels.

A config that cannot be read or names unknown voices or sides is an error of the files it governs:
they are quarantined with the reason (:class:`ChannelConfigError`).
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo_assets.lib.audio.raw_scan import CHANNELS_CONFIG as CONFIG_NAME
from emo_assets.lib.schemas import CUSTOMER, MONO

SIDES = ("left", "right")  # channel 0 and channel 1 of a two-channel file
VOICES = ("agent", CUSTOMER)
# Two sides are the same voice when no 16-bit sample differs by more than one step.
IDENTICAL_WITHIN = 1.0 / 32768


class ChannelConfigError(ValueError):
    """A ``channels.toml`` that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class ChannelLayout:
    """The name of each side of a two-channel recording, in channel order (left, right)."""

    names: tuple[str, str]
    config: str  # the channels.toml it came from, relative to the raw root

    def channels(self) -> list[tuple[int, str]]:
        return list(enumerate(self.names))


def parse_config(text: str, where: str) -> ChannelLayout:
    """A layout from the text of a ``channels.toml`` (``where`` names it in errors)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ChannelConfigError(f'{where}: not valid TOML ({exc}); write e.g. [channels] agent = "left"') from None
    table = doc.get("channels")
    if not isinstance(table, dict) or not table or set(doc) != {"channels"}:
        raise ChannelConfigError(
            f'{where}: expected one [channels] table naming the voices, e.g. agent = "left", customer = "right"'
        )
    return _layout(table, where)


def parse_spec(text: str) -> ChannelLayout:
    """A layout from the command line's ``agent=left,customer=right`` (`emo analyze --channels`)."""
    where = f"--channels {text!r}"
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    if not pairs or not all(p.count("=") == 1 for p in pairs):
        raise ChannelConfigError(f"{where}: write voice=side pairs, e.g. agent=left,customer=right")
    table: dict[str, str] = {}
    for voice, side in (p.split("=") for p in pairs):
        if voice.strip() in table:
            raise ChannelConfigError(f"{where}: {voice.strip()} is named twice")
        table[voice.strip()] = side.strip()
    return _layout(table, where)


def _layout(table: dict, where: str) -> ChannelLayout:
    names = dict(zip(SIDES, SIDES))
    for voice, side in table.items():
        if voice not in VOICES:
            raise ChannelConfigError(f"{where}: unknown voice {voice!r}; the voices are {', '.join(VOICES)}")
        if side not in SIDES:
            raise ChannelConfigError(f'{where}: {voice} = {side!r} is not a side; use "left" or "right"')
        if names[side] != side:
            raise ChannelConfigError(f"{where}: {names[side]} and {voice} are both on the {side} side")
        names[side] = voice
    return ChannelLayout((names["left"], names["right"]), where)


@functools.lru_cache(maxsize=256)
def _read_config(path: str, mtime_ns: int, where: str) -> ChannelLayout:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ChannelConfigError(f"{where}: not UTF-8 text") from None
    except PermissionError:
        raise ChannelConfigError(
            f"{where}: unreadable (permission denied): fix its permissions, then re-run the day"
        ) from None
    return parse_config(text, where)


def layout_for(raw_root: Path, source_path: str) -> ChannelLayout | None:
    """The layout for the landed file ``source_path`` (relative to ``raw_root``, ``<day>/...``): the
    nearest ``channels.toml`` from its folder up to the day folder, or None."""
    root = Path(raw_root)
    parts = Path(source_path).parts[:-1]
    for depth in range(len(parts), 0, -1):
        folder = Path(*parts[:depth])
        candidate = root / folder / CONFIG_NAME
        try:
            st = candidate.stat()
        except FileNotFoundError:
            continue
        return _read_config(str(candidate), st.st_mtime_ns, (folder / CONFIG_NAME).as_posix())
    return None


def sides_identical(blocks) -> bool:
    """True when every ``(channels, n)`` block has two channels that never differ by more than one
    16-bit step: a mono recording saved as stereo."""
    for block in blocks:
        if block.shape[0] != 2:
            return False
        if np.max(np.abs(block[0] - block[1]), initial=0.0) > IDENTICAL_WITHIN:
            return False
    return True


def flac_name(audio_id: str, channel: str) -> str:
    """The 16 kHz FLAC of one channel: ``<audio_id>.flac`` for mono, ``<audio_id>.<channel>.flac`` else."""
    return f"{audio_id}.flac" if channel == MONO else f"{audio_id}.{channel}.flac"
