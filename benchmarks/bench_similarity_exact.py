"""similar_audio in DuckDB against a numpy brute-force top-k, on the same random embeddings, in one run.

    .venv/bin/python benchmarks/bench_similarity_exact.py [--rows 100000] [--dim 1024] [--days 10] [--queries 5]

The embeddings are written as a lake (one Parquet file per day), then queried three ways:
  numpy          cosine top-k over the in-memory float32 matrix (norms computed per query, as DuckDB does)
  duckdb table   the similar_audio macro over a DuckDB table holding the embeddings
  duckdb lake    the similar_audio macro over the warehouse's views on the Parquet lake (what `emo similar` runs)
Each is the median of ``--queries`` queries; every DuckDB answer is checked against numpy's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/helpers.py: the numpy reference

from common import cpu_model  # this script's folder is on sys.path

from emo_assets.lib import schemas
from emo_assets.lib.analytics import similarity
from emo_assets.lib.store import lake, warehouse
from tests.helpers import numpy_top_k


def _write_lake(root: Path, x: np.ndarray, days: int) -> list[str]:
    ids = [f"rec{i:07d}" for i in range(len(x))]
    per = -(-len(x) // days)
    for d in range(days):
        day = dt.date(2026, 1, 1) + dt.timedelta(days=d)
        rows = slice(d * per, min(len(x), (d + 1) * per))
        n = rows.stop - rows.start
        lake.write_partition(
            root,
            "emotion_embeddings",
            day.isoformat(),
            pa.table(
                {
                    "audio_id": ids[rows],
                    "date": pa.array([day] * n, pa.date32()),
                    "model_id": ["bench"] * n,
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x[rows].reshape(-1)), x.shape[1]),
                },
                schema=schemas.emotion_embeddings_schema(x.shape[1]),
            ),
        )
    return ids


def _median_s(fn, queries: list[int]) -> tuple[float, list]:
    fn(queries[0])  # warm-up: page cache, plan cache
    times, answers = [], []
    for q in queries:
        t0 = time.perf_counter()
        answers.append(fn(q))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    queries = [int(i) for i in rng.choice(args.rows, args.queries, replace=False)]
    k = args.k
    with tempfile.TemporaryDirectory() as tmp:
        lake_dir = Path(tmp) / "lake"
        t0 = time.perf_counter()
        ids = _write_lake(lake_dir, x, args.days)
        write_s = time.perf_counter() - t0

        def numpy_query(q: int):
            idx, sims = numpy_top_k(x, x[q], k + 1)  # k + 1: the query itself is dropped
            keep = idx != q
            return [ids[i] for i in idx[keep][:k]], sims[keep][:k]

        numpy_s, numpy_answers = _median_s(numpy_query, queries)

        con = duckdb.connect()
        warehouse.refresh_lake_views(con, lake_dir)
        similarity.create_similarity_macros(con)
        lake_s, lake_answers = _median_s(
            lambda q: con.execute("SELECT audio_id, similarity FROM similar_audio(?, ?)", [ids[q], k]).fetchall(),
            queries,
        )
        t0 = time.perf_counter()
        con.execute("CREATE TABLE embeddings_table AS SELECT * FROM emotion_embeddings")
        load_s = time.perf_counter() - t0
        similarity.create_similarity_macros(con, "embeddings_table")
        table_s, table_answers = _median_s(
            lambda q: con.execute("SELECT audio_id, similarity FROM similar_audio(?, ?)", [ids[q], k]).fetchall(),
            queries,
        )
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
        con.close()

    for (want_ids, want_sims), got_table, got_lake in zip(numpy_answers, table_answers, lake_answers):
        for got in (got_table, got_lake):
            assert [g[0] for g in got] == want_ids, (got, want_ids)
            np.testing.assert_allclose([g[1] for g in got], want_sims, atol=1e-5)

    print(
        f"machine: nproc={os.cpu_count()} (affinity {len(os.sched_getaffinity(0))}), CPU {cpu_model()}, "
        f"duckdb {duckdb.__version__} ({threads} threads), numpy {np.__version__}"
    )
    print(
        f"data: {args.rows} x {args.dim} float32 in {args.days} Parquet days (written in {write_s:.1f} s); "
        f"k={k}; median of {args.queries} queries; answers identical to numpy's"
    )
    print("| method | median per query | vs numpy |")
    print("|---|---|---|")
    print(f"| numpy brute force (cosine, argpartition) | {numpy_s * 1000:.0f} ms | 1.00x |")
    print(f"| DuckDB similar_audio over a DuckDB table | {table_s * 1000:.0f} ms | {table_s / numpy_s:.2f}x |")
    print(f"| DuckDB similar_audio over the Parquet lake views | {lake_s * 1000:.0f} ms | {lake_s / numpy_s:.2f}x |")
    print(f"(loading the table from the lake once: {load_s:.1f} s)")


if __name__ == "__main__":
    main()
