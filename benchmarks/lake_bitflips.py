"""Single-bit flips in an ``emotion_scores`` partition: how many read back silently different.

One flip per byte position (a random bit of it, seeded), in a partition of 40 recordings written
three ways: without integrity data (how the lake was written before issue 12), with Parquet page
checksums only (a partition whose recorded SHA-256 is missing: a legacy file, or a writer killed
between the rename and the record), and as the lake writes it now (page checksums and the recorded
SHA-256). Prints, per way: caught (an error on read), read back equal, read back DIFFERENT (silent
wrong data). Usage: ``.venv/bin/python benchmarks/lake_bitflips.py`` (about a minute).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from emo_assets.lib import schemas
from emo_assets.lib.model.score_rows import score_rows
from emo_assets.lib.store import lake

DAY = "2026-11-20"


def scores_table(n: int = 40, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    date = dt.date.fromisoformat(DAY)
    rows = [
        score_rows(f"{i:064x}", date, "random-tiny-seed0", rng.dirichlet(np.ones(9)).astype(np.float32))
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=schemas.EMOTION_SCORES)


def flips(lake_root: Path, read, rows: pa.Table) -> dict[str, int]:
    path = lake.partition_file(lake_root, "emotion_scores", DAY)
    original = path.read_bytes()
    rng = np.random.default_rng(1)
    counts = {"caught": 0, "equal": 0, "DIFFERENT": 0}
    for pos in range(len(original)):
        data = bytearray(original)
        data[pos] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(data))
        try:
            back = read()
        except Exception:  # noqa: BLE001 - any error on read is a caught flip
            counts["caught"] += 1
            continue
        try:
            same = back.equals(rows)
        except Exception:  # noqa: BLE001 - read without error, unusable after (a field name no longer UTF-8)
            same = False
        counts["equal" if same else "DIFFERENT"] += 1
    path.write_bytes(original)
    return {"flips": len(original), **counts}


def main() -> None:
    rows = scores_table()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plain = lake.partition_file(root / "plain", "emotion_scores", DAY)
        plain.parent.mkdir(parents=True)
        pq.write_table(rows, plain, compression="zstd")  # the lake's writer before integrity data
        print("no integrity data      ", flips(root / "plain", lambda: pq.read_table(plain), rows))

        pages = lake.write_partition(root / "pages", "emotion_scores", DAY, rows)
        lake.checksum_file(root / "pages", pages).unlink()
        print(
            "page checksums only    ",
            flips(root / "pages", lambda: lake.read_partition(root / "pages", "emotion_scores", DAY), rows),
        )

        lake.write_partition(root / "both", "emotion_scores", DAY, rows)
        print(
            "page checksums + SHA256",
            flips(root / "both", lambda: lake.read_partition(root / "both", "emotion_scores", DAY), rows),
        )


if __name__ == "__main__":
    main()
