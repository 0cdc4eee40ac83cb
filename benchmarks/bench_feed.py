"""Benchmark: the CPU work that feeds the model, per second of audio (SCALING.md, section 2).

    python benchmarks/bench_feed.py WORKDIR [--recordings 12] [--seconds 60]

Writes a day of speech-like recordings in two forms, 8 kHz mono 16-bit WAV (telephony) and 44.1 kHz
stereo MP3, then runs the day's first two stages as the assets do, on one thread: ``ingest_day``
(scan, SHA-256, probe) and ``resample_day`` (decode, downmix, resample to 16 kHz, FLAC encode),
each twice into a fresh output folder. Prints one JSON line: CPU seconds of this process per
second of audio for each stage and form (best of the two), and the machine's load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model  # noqa: E402

from emo_assets.lib.audio.ingest import ingest_day  # noqa: E402
from emo_assets.lib.audio.resample import resample_day  # noqa: E402
from emo_assets.lib.audio.sample_day import synth_speech, write_encoded  # noqa: E402

DAY = "2026-11-20"
FORMS = {"wav_8k_mono": (8000, 1, "wav_pcm_16", "wav"), "mp3_44k_stereo": (44100, 2, "mp3", "mp3")}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_day(raw: Path, rate: int, channels: int, codec: str, ext: str, n: int, seconds: float) -> None:
    day = raw / DAY
    if day.is_dir() and len(list(day.iterdir())) == n:
        return
    day.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        samples = synth_speech(seconds, rate, np.random.default_rng([7, i]), channels=channels)
        write_encoded(day / f"call_{i:03d}.{ext}", samples, rate, codec)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--recordings", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    audio_s = args.recordings * args.seconds
    result = {"cpu": cpu_model(), "nproc": os.cpu_count(), "audio_s": audio_s, "loadavg_start": os.getloadavg()}
    for form, (rate, channels, codec, ext) in FORMS.items():
        raw = args.workdir / form / "raw"
        write_day(raw, rate, channels, codec, ext, args.recordings, args.seconds)
        ingest, resample = [], []
        for attempt in range(2):
            start = cpu_s()
            landed = ingest_day(raw, DAY, dt.datetime.now(dt.UTC)).rows
            ingest.append(cpu_s() - start)
            out = args.workdir / form / f"resampled{attempt}"
            shutil.rmtree(out, ignore_errors=True)
            start = cpu_s()
            resampled = resample_day(landed, raw, out, DAY, workers=1).rows
            resample.append(cpu_s() - start)
            assert resampled.num_rows == args.recordings, resampled.num_rows
        result[form] = {
            "ingest_cpu_s_per_audio_s": float(f"{min(ingest) / audio_s:.3g}"),
            "resample_cpu_s_per_audio_s": float(f"{min(resample) / audio_s:.3g}"),
        }
    result["loadavg_end"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
