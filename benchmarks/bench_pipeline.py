"""Benchmark: a whole `emo run` day with the large-architecture model, then the same day again.

    .venv/bin/python benchmarks/bench_pipeline.py [--model-dir DIR] [--clips 24] [--long-s 180]

Builds the large random model (cached in --model-dir, rebuilt if stale; bench_inference.ensure_model), writes a day of speech-like recordings in
several formats (seeded: --clips clips of 2-12 s plus one --long-s recording) into a fresh data
directory, and runs `emo run` for that day twice, each in its own process under `/usr/bin/time -v`:

1. the first run: wall time and peak RSS of the whole run (one copy of the weights, all stages);
2. the re-run of the unchanged day: wall time and peak RSS; its cost relative to the first run.

Prints a markdown report (and JSON with --json). Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-11-23"
CODECS = ("wav_pcm_16", "mp3", "flac", "aac", "opus", "wav_ulaw")


def write_day(raw_day: Path, clips: int, long_s: float) -> float:
    from emo_assets.lib.audio.sample_day import synth_speech, write_encoded

    rng = np.random.default_rng(7)
    total = 0.0
    for i in range(clips):
        seconds = float(rng.uniform(2.0, 12.0))
        codec = CODECS[i % len(CODECS)]
        rate = {"wav_ulaw": 8000, "opus": 48000}.get(codec, 44100)
        ext = {"wav_pcm_16": "wav", "wav_ulaw": "wav", "aac": "m4a"}.get(codec, codec)
        write_encoded(raw_day / f"clip_{i:03d}.{ext}", synth_speech(seconds, rate, i), rate, codec)
        total += seconds
    if long_s > 0:
        write_encoded(raw_day / "long_call.flac", synth_speech(long_s, 16000, 999), 16000, "flac")
        total += long_s
    return total


def timed_run(data_dir: Path, model_dir: Path) -> dict:
    # The clips are synth_speech, which a voice-activity model hears no speech in: timed in fixed
    # windows, as the numbers in BENCHMARKS.md were (speech turns: bench_turns.py).
    env = {**os.environ, "EMO_MODEL": str(model_dir), "EMO_DEVICE": "cpu", "EMO_SEGMENTS": "windows"}
    env.pop("DAGSTER_HOME", None)
    cmd = ["/usr/bin/time", "-v", str(ROOT / ".venv/bin/emo"), "run", "--date", DAY, "--data-dir", str(data_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"emo run failed with {proc.returncode}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return {"wall_s": seconds, "peak_rss_mb": rss_kb / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/emo-bench/large"))
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--long-s", type=float, default=180.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from bench_inference import ensure_model  # this script's folder is on sys.path

    ensure_model(args.model_dir)
    with tempfile.TemporaryDirectory(prefix="emo-bench-day-") as tmp:
        data_dir = Path(tmp)
        audio_s = write_day(data_dir / "raw" / DAY, args.clips, args.long_s)
        first = timed_run(data_dir, args.model_dir)
        again = timed_run(data_dir, args.model_dir)
    result = {
        "machine": {
            "nproc": len(os.sched_getaffinity(0)),
            "cpu": next(
                (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"
            ),
            "python": platform.python_version(),
        },
        "day": {"clips": args.clips, "long_s": args.long_s, "audio_s": round(audio_s, 1)},
        "first_run": first,
        "rerun_unchanged": again,
        "rerun_cost_vs_first": again["wall_s"] / first["wall_s"],
        "first_run_x_realtime": audio_s / first["wall_s"],
    }
    print(f"""## Pipeline: one `emo run` day, large architecture (random weights), CPU

Day: {args.clips} clips of 2-12 s in {len(CODECS)} formats + one {args.long_s:.0f} s recording = {audio_s:.0f} s of audio.
Machine: {result["machine"]["nproc"]} cores, {result["machine"]["cpu"]}.

| run | wall | peak RSS |
|---|---|---|
| first run (decode, resample, inference, checks, clusters, SQL) | {first["wall_s"]:.1f} s ({result["first_run_x_realtime"]:.2f}x real-time) | {first["peak_rss_mb"]:.0f} MB |
| re-run of the unchanged day | {again["wall_s"]:.1f} s | {again["peak_rss_mb"]:.0f} MB |

Re-run cost: {100 * result["rerun_cost_vs_first"]:.1f} % of the first run.
""")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
