"""Benchmark: a day's scoring (or, with ``--stage resample``, its resampling) in-process vs on the
loopback Ray cluster, at equal cores.

    make cluster-up   # 2 Ray nodes x 1 CPU, one `emo_model` unit each
    python benchmarks/bench_ray.py WORK_DIR [--size tiny] [--recordings 200] [--seconds 3] [--rounds 2]
    python benchmarks/bench_ray.py WORK_DIR --stage resample [--recordings 200] [--seconds 30] [--rounds 3]

``--stage resample``: ``--recordings`` 8 kHz mu-law telephony WAVs of ``--seconds`` s are written
into WORK_DIR once; then, ``--rounds`` times alternately, ``resample_day`` of the day in 2 threads of
this process, and as Ray CPU tasks on the 2 nodes (connecting included). The FLACs and rows of the
two are checked equal. Prints one JSON line.

Writes ``--recordings`` synthetic speech-like clips of ``--seconds`` s as 16 kHz FLACs and a
random-weight test model of ``--size`` into WORK_DIR once. Then, ``--rounds`` times alternately:

* in-process: the model loaded in this process (its threads: every core, 2 here) and
  ``score_day`` over the day, load included;
* on Ray: ``score_day_on_ray`` with 2 model actors (1 thread each) and the decode tasks on the 2
  nodes' CPUs, connecting, starting the actors and their model loads included.

Then one `emo run` of a day of the same clips (as WAVs in the landing zone) on Ray, timed from its
start to the first batch scored on the cluster and to its end, and the same `emo run` in-process.
Prints one JSON line; the two outputs' tables are checked equal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from emo_assets.lib import ray_cluster
from emo_assets.lib.audio.ingest import ingest_day
from emo_assets.lib.audio.load import FlacReader, write_mono_16k_flac
from emo_assets.lib.audio.resample import resample_day
from emo_assets.lib.audio.sample_day import synth_speech, write_encoded
from emo_assets.lib.model.loading import LazyEmotionModel, describe_model, load_model
from emo_assets.lib.model.model_dir import make_test_model
from emo_assets.lib.model.ray_scoring import score_day_on_ray
from emo_assets.lib.model.scoring import score_day
from emo_assets.lib.model.settings import ModelSettings
from emo_assets.resources import PROJECT_ROOT

DAY = "2026-11-20"
EMO = str(Path(sys.executable).with_name("emo"))
BATCH_LINE = re.compile(r"batch 1 scored on Ray")


def cluster_env() -> dict[str, str]:
    env = {}
    for line in (PROJECT_ROOT / "data" / "cluster" / "env.sh").read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "export":
            env.update(word.split("=", 1) for word in words[1:])
    return env


def write_day(root: Path, n: int, seconds: float) -> tuple[pa.Table, pa.Table]:
    flacs, raw = root / "flac", root / "raw" / DAY
    flacs.mkdir(parents=True, exist_ok=True)
    raw.mkdir(parents=True, exist_ok=True)
    ids, paths = [], []
    for i in range(n):
        path, wav = flacs / f"r{i:03d}.flac", raw / f"r{i:03d}.wav"
        if not path.exists() or not wav.exists():
            samples = synth_speech(seconds, 16000, np.random.default_rng([7, i]))
            write_encoded(wav, samples, 16000, "wav_pcm_16")
            write_mono_16k_flac(path, [samples[0]])
        ids.append(path.stem)
        paths.append(str(path))
    resampled = pa.table({"audio_id": ids, "path": paths})
    return resampled, pa.table({"audio_id": ids, "source_path": paths})


def emo_run(data_dir: Path, model_dir: Path, env: dict) -> dict:
    """One `emo run` of the day: seconds to the first batch scored on Ray (if on Ray) and to the end."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [EMO, "run", "--date", DAY, "--data-dir", str(data_dir), "--model", str(model_dir), "--device", "cpu"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = None
    tail = []
    for line in proc.stderr:
        tail = [*tail[-50:], line]
        if first is None and BATCH_LINE.search(line):
            first = round(time.perf_counter() - started, 2)
    if proc.wait() != 0:
        raise SystemExit("".join(tail))
    return {"first_batch_scored_s": first, "total_s": round(time.perf_counter() - started, 2)}


def resample_stage(work_dir: Path, address: str, n: int, clip_s: float, rounds: int) -> dict:
    """resample_day of ``n`` 8 kHz telephony WAVs in 2 threads vs as Ray CPU tasks, rounds alternating."""
    raw = work_dir / "telephony" / "raw"
    for i in range(n):
        wav = raw / DAY / f"t{i:03d}.wav"
        if not wav.exists():
            write_encoded(wav, synth_speech(clip_s, 8000, np.random.default_rng([8, i])), 8000, "wav_ulaw")
    landed = ingest_day(raw, DAY, dt.datetime(2026, 11, 20, tzinfo=dt.UTC)).rows

    def run(name: str, pool=None):
        out_dir = work_dir / "telephony" / name
        subprocess.run(["rm", "-rf", str(out_dir)], check=True)
        start = time.perf_counter()
        if pool is None:
            out = resample_day(landed, raw, out_dir / DAY, DAY, workers=2, data_root=out_dir)
        else:
            with ray_cluster.connected(address):
                out = resample_day(landed, raw, out_dir / DAY, DAY, data_root=out_dir, pool=pool())
        return round(time.perf_counter() - start, 2), out

    seconds: dict[str, list[float]] = {"threads": [], "ray_tasks": []}
    for _ in range(rounds):
        for name, pool in (("threads", None), ("ray_tasks", lambda: ray_cluster.CpuTasks(name="resample"))):
            took, out = run(name, pool)
            assert out.rejects.num_rows == 0 and out.rows.num_rows == n, out.rejects.to_pylist()[:3]
            seconds[name].append(took)
    threads_dir, ray_dir = work_dir / "telephony" / "threads" / DAY, work_dir / "telephony" / "ray_tasks" / DAY
    names = sorted(p.name for p in threads_dir.glob("*.flac"))
    assert len(names) == n and names == sorted(p.name for p in ray_dir.glob("*.flac"))
    assert all((threads_dir / f).read_bytes() == (ray_dir / f).read_bytes() for f in names)
    best = {name: min(values) for name, values in seconds.items()}
    return {
        "stage": "resample",
        "recordings": n,
        "clip_s": clip_s,
        "seconds": seconds,
        "ray_slower_pct": round(100 * (best["ray_tasks"] / best["threads"] - 1), 1),
        "overhead_ms_per_recording": round(1000 * (best["ray_tasks"] - best["threads"]) / n, 1),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--stage", choices=("score", "resample"), default="score")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--recordings", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    env = cluster_env()
    address = env["EMO_RAY_ADDRESS"]
    if args.stage == "resample":
        print(json.dumps(resample_stage(args.work_dir, address, args.recordings, args.seconds, args.rounds)))
        return
    model_dir = args.work_dir / f"model-{args.size}"
    if not (model_dir / "model.pt").exists():
        make_test_model(model_dir, size=args.size, seed=0)
    resampled, audio_files = write_day(args.work_dir, args.recordings, args.seconds)
    settings = ModelSettings(str(model_dir), device="cpu")

    load_s: list[float] = []

    def in_process():
        start = time.perf_counter()
        model = load_model(settings)
        load_s.append(round(time.perf_counter() - start, 2))
        return score_day(resampled, audio_files, model, DAY, open_audio=FlacReader), None

    def on_ray():
        lazy = LazyEmotionModel(describe_model(settings), lambda: None)
        return score_day_on_ray(
            resampled, audio_files, lazy, DAY, address=address, settings=settings, open_audio=FlacReader
        )

    seconds: dict[str, list[float]] = {"in_process": [], "ray": []}
    outputs, loads, first_batch = {}, [], []
    for _ in range(args.rounds):
        for name, run in (("in_process", in_process), ("ray", on_ray)):
            start = time.perf_counter()
            out, stats = run()
            seconds[name].append(round(time.perf_counter() - start, 2))
            outputs[name] = out
            if stats is not None:
                loads.append(stats.loads)
                first_batch.append(round(stats.first_scored_s, 2))
    for table in ("scores", "embeddings", "segments"):
        assert getattr(outputs["ray"], table).equals(getattr(outputs["in_process"], table)), table
    best = {name: min(values) for name, values in seconds.items()}
    runs = {}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EMO_", "DAGSTER_HOME"))}
    base["EMO_SETTLE_S"] = "0"
    base["EMO_SEGMENTS"] = "windows"  # the clips are synthetic: scored whole, as score_day above scores them
    for name, extra in (("in_process", {}), ("ray", {"EMO_RAY_ADDRESS": address})):
        data_dir = args.work_dir / f"run-{name}"
        subprocess.run(["rm", "-rf", str(data_dir)], check=True)
        (data_dir / "raw").mkdir(parents=True)
        subprocess.run(["cp", "-r", str(args.work_dir / "raw" / DAY), str(data_dir / "raw" / DAY)], check=True)
        runs[name] = emo_run(data_dir, model_dir, {**base, **extra})
    print(
        json.dumps(
            {
                "recordings": args.recordings,
                "clip_s": args.seconds,
                "model": args.size,
                "seconds": seconds,
                "ray_slower_pct": round(100 * (best["ray"] / best["in_process"] - 1), 1),
                "overhead_ms_per_recording": round(1000 * (best["ray"] - best["in_process"]) / args.recordings, 1),
                "in_process_model_load_s": load_s,
                "ray_first_batch_scored_s": first_batch,
                "model_loads_per_actor_process": loads,
                "emo_run": runs,
                "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            }
        )
    )


if __name__ == "__main__":
    main()
