"""Similarity search at scale: the approximate index (lib/analytics/ann.py) against the exact answer.

    .venv/bin/python benchmarks/bench_similarity.py --rows 1000000 [--nlist 1024] [--out result.json]

Synthetic 1024-d embeddings drawn from clusters, generated day by day (``--day-rows``, default
100,000) from a seed, so memory stays bounded by one day and the same rows can be made again:
``--centres`` Gaussian cluster centres (unit vectors); a row is its centre plus a 32-d Gaussian factor
through a fixed random basis (the within-cluster structure, ``--spread``) plus isotropic uniform noise
(``--noise``), then L2-normalised. The queries are ``--queries`` fresh rows of the same distribution
(not in the index).

One pass writes every day with ``ann.write_day`` (the asset's own code: the first days are stored
exactly, the day that reaches ``--train`` vectors trains the IVF, the rest are encoded) into a
temporary similarity folder, while the exact top-10 of every query is kept by brute force in numpy
over each day's rows. Then ``ann.load_index`` merges the days, and every query is searched at each
``--nprobe``: recall@10 against the exact top-10, median and p90 latency of one query at a time.
Last, the cost of one more day: write_day of ``--day-rows`` new rows (encode + file), then the same
day again (a re-run: replaced, not duplicated), and in memory ``add_day``.
The exact SQL macros against numpy: benchmarks/bench_similarity_exact.py.
Progress goes to stdout line by line; ``--out`` gets the results as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import cpu_model  # this script's folder is on sys.path

from emo_assets.lib.analytics import ann

FIRST_DAY = dt.date(2025, 1, 1)
FACTORS = 32


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


class Clusters:
    """The synthetic distribution: centres, a shared factor basis, and rows made from a seed."""

    def __init__(self, dim: int, centres: int, spread: float, noise: float, seed: int):
        rng = np.random.default_rng([seed, 0])
        c = rng.standard_normal((centres, dim), dtype=np.float32)
        self.centres = c / np.linalg.norm(c, axis=1, keepdims=True)
        # a row's factor part has expected norm ``spread`` (FACTORS standard normals through this basis)
        self.basis = rng.standard_normal((FACTORS, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim * FACTORS))
        self.noise = np.float32(noise * np.sqrt(12.0 / dim))  # uniform(-0.5, 0.5) has variance 1/12
        self.dim, self.seed = dim, seed

    def rows(self, n: int, part: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1, part])
        x = rng.random((n, self.dim), dtype=np.float32)
        x -= np.float32(0.5)
        x *= self.noise
        x += self.centres[rng.integers(0, len(self.centres), n)]
        x += rng.standard_normal((n, FACTORS), dtype=np.float32) @ self.basis
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


class ExactTopK:
    """The exact top-k of each query over rows seen so far (brute force in numpy, one chunk at a time)."""

    def __init__(self, queries: np.ndarray, k: int):
        self.q, self.k = queries, k
        self.sims = np.full((len(queries), 0), -np.inf, np.float32)
        self.ids = np.zeros((len(queries), 0), np.int64)

    def update(self, x: np.ndarray, first_id: int) -> None:
        s = self.q @ x.T
        sims = np.concatenate([self.sims, s], axis=1)
        ids = np.concatenate([self.ids, np.broadcast_to(np.arange(first_id, first_id + len(x)), s.shape)], axis=1)
        keep = np.argsort(-sims, axis=1, kind="stable")[:, : self.k]
        self.sims, self.ids = np.take_along_axis(sims, keep, 1), np.take_along_axis(ids, keep, 1)


def _audio_ids(first: int, n: int) -> list[str]:
    return [f"r{i:09d}" for i in range(first, first + n)]


def run(args: argparse.Namespace) -> dict:
    data = Clusters(args.dim, args.centres, args.spread, args.noise, args.seed)
    queries = data.rows(args.queries, part=10**9)  # a part no day uses
    exact = ExactTopK(queries, 10)
    settings = ann.AnnSettings(nlist=args.nlist, train_min=args.train, nprobe=args.nprobes[0])
    days = -(-args.rows // args.day_rows)
    result: dict = {
        "machine": f"nproc={os.cpu_count()}, CPU {cpu_model()}, load average at start {os.getloadavg()}",
        "faiss": ann._faiss().__version__,
        "numpy": np.__version__,
        "rows": args.rows,
        "dim": args.dim,
        "days": days,
        "day_rows": args.day_rows,
        "centres": args.centres,
        "spread": args.spread,
        "noise": args.noise,
        "settings": {"nlist": args.nlist, "train_min": args.train},
    }

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2, default=str))

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_ann_"))
    log(f"writing {args.rows} rows as {days} days of {args.day_rows} into {root}")
    write_s, gen_s, exact_s, train_s = 0.0, 0.0, 0.0, None
    done, resumed, write_times = 0, 0, []
    t_build = time.perf_counter()
    for d in range(days):
        n = min(args.day_rows, args.rows - done)
        day = (FIRST_DAY + dt.timedelta(days=d)).isoformat()
        t0 = time.perf_counter()
        x = data.rows(n, part=d)
        gen_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        exact.update(x, done)
        exact_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        if args.resume and ann.day_path(root, "bench", day).is_file():
            # Written by an earlier run with the same seed and settings: the rows above are the same
            # rows, regenerated only for the exact top-10; the day's file is kept as it is.
            resumed += 1
            done += n
            log(f"day {d + 1}/{days} {day}: {n} rows, kept from the earlier run")
            del x
            continue
        written = ann.write_day(root, "bench", day, _audio_ids(done, n), x, settings)
        took = time.perf_counter() - t0
        if written.trained_now:
            train_s = took
        else:
            write_s += took
            write_times.append(took)
        done += n
        result["progress"] = {"days_written": d + 1, "rows_written": done, "write_s": round(write_s, 1)}
        log(
            f"day {d + 1}/{days} {day}: {n} rows, write_day {took:.1f} s"
            f"{' (trained the IVF here)' if written.trained_now else ''}; rss {_rss_gb():.1f} GB"
        )
        del x
    build_s = time.perf_counter() - t_build
    result["build"] = {
        "total_s": round(build_s, 1),
        "generate_s": round(gen_s, 1),
        "exact_topk_s": round(exact_s, 1),
        "train_day_s": None if train_s is None else round(train_s, 1),
        "encode_and_write_other_days_s": round(write_s, 1),
        "days_kept_from_earlier_run": resumed,
        "write_day_median_s": round(statistics.median(write_times), 1) if write_times else None,
        "bytes_on_disk": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
    }
    log(f"build done: {result['build']}")

    if args.wait_idle_below is not None:
        log(f"waiting for the 1-minute load average to fall below {args.wait_idle_below} before loading")
        while os.getloadavg()[0] >= args.wait_idle_below:
            time.sleep(10)
        result["load_average_before_search"] = os.getloadavg()
        log(f"load average {os.getloadavg()}: loading and searching")
    t0 = time.perf_counter()
    index = ann.load_index(root, "bench", settings)
    result["load_s"] = round(time.perf_counter() - t0, 1)
    result["rss_after_load_gb"] = round(_rss_gb(), 2)
    log(f"loaded {index.size} vectors in {result['load_s']} s; rss {result['rss_after_load_gb']} GB")

    truth = [{f"r{i:09d}" for i in row} for row in exact.ids]
    result["search"] = []
    for nprobe in args.nprobes:
        index.search(queries[0], 10, nprobe=nprobe)  # warm-up
        times, cpu, recalls = [], [], []
        for q, want in zip(queries, truth):
            t0, c0 = time.perf_counter(), time.process_time()
            hits = index.search(q, 10, nprobe=nprobe)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            recalls.append(len({h.audio_id for h in hits} & want) / 10)
        row = {
            "nprobe": nprobe,
            "recall_at_10": round(float(np.mean(recalls)), 4),
            "min_recall_at_10": round(float(np.min(recalls)), 2),
            "median_ms": round(statistics.median(times) * 1000, 2),
            "p90_ms": round(float(np.percentile(times, 90)) * 1000, 2),
            "median_cpu_ms": round(statistics.median(cpu) * 1000, 2),  # this process's CPU time: load-independent
        }
        result["search"].append(row)
        log(f"search {row}")

    # One more day: encoded and written (what the asset does), then re-run (replaced), then in memory.
    next_day = (FIRST_DAY + dt.timedelta(days=days)).isoformat()
    x = data.rows(args.day_rows, part=days)
    ids = _audio_ids(args.rows, args.day_rows)
    t0 = time.perf_counter()
    ann.write_day(root, "bench", next_day, ids, x, settings)
    add_file_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ann.write_day(root, "bench", next_day, ids, x, settings)
    rerun_file_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.add_day(next_day, ids, x)
    add_memory_s = time.perf_counter() - t0
    before = index.size
    t0 = time.perf_counter()
    index.add_day(next_day, ids, x)
    replace_memory_s = time.perf_counter() - t0
    if index.size != before:
        raise RuntimeError(f"re-adding a day changed the size {before} -> {index.size}: duplicates")
    result["one_more_day"] = {
        "rows": args.day_rows,
        "write_day_s": round(add_file_s, 1),
        "write_day_again_s": round(rerun_file_s, 1),
        "in_memory_add_day_s": round(add_memory_s, 1),
        "in_memory_replace_day_s": round(replace_memory_s, 1),
        "day_file_bytes": ann.day_path(root, "bench", next_day).stat().st_size,
    }
    result["peak_rss_gb"] = round(_peak_rss_gb(), 2)
    result["load_average_at_end"] = os.getloadavg()
    log(f"one more day: {result['one_more_day']}; peak rss {result['peak_rss_gb']} GB")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--day-rows", type=int, default=100_000)
    parser.add_argument("--centres", type=int, default=4000)
    parser.add_argument("--spread", type=float, default=0.6, help="norm of the 32-d within-cluster factor")
    parser.add_argument("--noise", type=float, default=0.3, help="scale (norm) of the isotropic noise")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--train", type=int, default=160_000, help="vectors that train the IVF (ann train_min)")
    parser.add_argument("--nprobe", dest="nprobes", type=lambda s: [int(v) for v in s.split(",")], default=[16, 32])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="similarity folder to write (default: a temporary folder)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the day files an interrupted run left in --workdir (same seed and settings) instead of re-encoding them",
    )
    parser.add_argument(
        "--wait-idle-below",
        type=float,
        help="build first, then wait until the 1-minute load average is below this before loading and searching "
        "(idle-machine query times on a shared machine)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the written index")
    parser.add_argument("--out", help="write the results (and progress) as JSON here")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
