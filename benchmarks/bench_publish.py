"""Publishing a day costs that day (issue 10, item 1): publish day 11 with 10 days of history and
day 101 with 100 days, side by side in one run.

Each data directory gets ``--history`` synthetic days, published once (not timed). Then, repeatedly
and alternating between the two directories, a new day is written as a run writes it
(``audio_files`` and ``emotion_embeddings`` in the lake, ``embedding_index`` and ``emotion_clusters``
in the warehouse, ``--rows`` recordings of 1024-d embeddings) and published; only the publish is
timed. The same day is re-run each round, as a late file would make it.

    .venv/bin/python benchmarks/bench_publish.py --rows 2000 --rounds 5 --out /tmp/bench_publish.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from emo_assets.lib.store import lake, publish, warehouse

DIM = 1024
START = dt.date(2026, 1, 1)


def _day(i: int) -> str:
    return (START + dt.timedelta(days=i)).isoformat()


def _tables(day: str, rows: int, matrix: np.ndarray) -> dict[str, pa.Table]:
    date = pa.array([dt.date.fromisoformat(day)] * rows)
    ids = pa.array([f"{day}-{i:06d}" for i in range(rows)])
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), DIM)
    return {
        "audio_files": pa.table({"source_path": ids, "date": date, "duration_s": pa.array(np.full(rows, 30.0))}),
        "emotion_embeddings": pa.table(
            {"audio_id": ids, "date": date, "model_id": ["m"] * rows, "embedding": embedding}
        ),
        "emotion_clusters": pa.table(
            {"audio_id": ids, "date": date, "cluster_id": pa.array(np.arange(rows) % 8), "model_version": ["v1"] * rows}
        ),
    }


def write_day(data_dir: Path, day: str, tables: dict[str, pa.Table]) -> None:
    """A day as a run writes it: the lake tables, then the warehouse's (not timed)."""
    for name in ("audio_files", "emotion_embeddings"):
        lake.write_partition(data_dir / "lake", name, day, tables[name])
    with warehouse.connect(data_dir / "warehouse.duckdb") as con:
        warehouse.replace_index_day(con, day, tables["emotion_embeddings"])
        warehouse.replace_day(con, "emotion_clusters", day, tables["emotion_clusters"])


def build(data_dir: Path, history: int, rows: int, matrix: np.ndarray) -> float:
    """The history: every day's lake files (uncompressed, quicker to write) and warehouse rows in one
    connection, then published once."""
    started = time.perf_counter()
    with warehouse.connect(data_dir / "warehouse.duckdb") as con:
        for i in range(history):
            day = _day(i)
            tables = _tables(day, rows, matrix)
            for name in ("audio_files", "emotion_embeddings"):
                path = lake.partition_file(data_dir / "lake", name, day)
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(tables[name], path, compression="none")
            warehouse.replace_index_day(con, day, tables["emotion_embeddings"])
            warehouse.replace_day(con, "emotion_clusters", day, tables["emotion_clusters"])
    publish.publish(data_dir / "warehouse.duckdb", data_dir / "lake", grace_s=0)
    return time.perf_counter() - started


def du(path: Path) -> int:
    """Bytes under ``path``, a hard-linked file counted once."""
    seen = {(p.stat().st_dev, p.stat().st_ino): p.stat().st_size for p in path.rglob("*") if p.is_file()}
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="recordings per day (default 2000)")
    parser.add_argument("--small", type=int, default=10, help="days of history of the small directory")
    parser.add_argument("--large", type=int, default=100, help="days of history of the large directory")
    parser.add_argument("--rounds", type=int, default=5, help="publishes timed per directory")
    parser.add_argument("--workdir", default=None, help="where the data directories go (default: a temp dir)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((args.rows, DIM), dtype=np.float32)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_publish_"))
    dirs = {args.small: work / f"history_{args.small}", args.large: work / f"history_{args.large}"}
    result: dict = {
        "rows_per_day": args.rows,
        "embedding_dim": DIM,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.processor() or platform.platform()}",
        "load_average_at_start": os.getloadavg(),
        "setup_s": {},
        "publish_s": {},
    }
    try:
        for history, data_dir in dirs.items():
            result["setup_s"][history] = round(build(data_dir, history, args.rows, matrix), 1)
            print(f"{history} days of history built in {result['setup_s'][history]} s ({du(data_dir) / 1e6:.0f} MB)")
        times: dict[int, list[float]] = {h: [] for h in dirs}
        written: dict[int, list[int]] = {h: [] for h in dirs}
        for r in range(args.rounds):
            for history, data_dir in dirs.items():  # alternating: both see the same load
                day = _day(history)  # day 11 after 10 days, day 101 after 100
                write_day(data_dir, day, _tables(day, args.rows, np.roll(matrix, r, axis=0)))
                started = time.perf_counter()
                done = publish.publish(data_dir / "warehouse.duckdb", data_dir / "lake", grace_s=0)
                times[history].append(time.perf_counter() - started)
                written[history].append(sum((data_dir / f).stat().st_size for f in done.written))
                print(f"round {r}: day {history + 1} of {data_dir.name}: {times[history][-1] * 1000:.0f} ms, "
                      f"{len(done.written)} files, {written[history][-1] / 1e6:.1f} MB")  # fmt: skip
        for history in dirs:
            result["publish_s"][history] = {
                "median": round(statistics.median(times[history]), 4),
                "all": [round(t, 4) for t in times[history]],
                "bytes_written_median": int(statistics.median(written[history])),
                "read_copy_bytes": warehouse.read_copy_path(dirs[history] / "warehouse.duckdb").stat().st_size,
            }
        small, large = (result["publish_s"][h]["median"] for h in (args.small, args.large))
        result["ratio_large_to_small"] = round(large / small, 3)
        result["load_average_at_end"] = os.getloadavg()
        print(json.dumps(result, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
