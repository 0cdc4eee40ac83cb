"""Benchmark: ``score_day`` on the tiny model over 24 x 3 s FLACs and one 3 min FLAC (``--short``: the 24 only).

    python benchmarks/bench_score_day.py AUDIO_DIR TINY_MODEL_DIR [--short]

Writes the FLACs into AUDIO_DIR once; prints one JSON line: three timed runs after a warm-up, the
first recording's first three scores (to compare numbers between versions) and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import soundfile as sf

from emo_assets.lib.audio.load import FlacReader
from emo_assets.lib.model.loading import load_model
from emo_assets.lib.model.scoring import score_day
from emo_assets.lib.model.settings import ModelSettings
from emo_assets.lib.schemas import EMOTION_LABELS, SAMPLE_RATE

DAY = "2026-11-20"


def write_day(root: Path, short_only: bool) -> pa.Table:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids, paths = [], []
    for i, seconds in enumerate([3.0] * 24 + ([] if short_only else [180.0])):
        path = root / f"r{i:02d}.flac"
        if not path.exists():
            noise = (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)
            sf.write(path, noise, SAMPLE_RATE, "PCM_16", format="FLAC")
        ids.append(path.stem)
        paths.append(str(path))
    return pa.table({"audio_id": ids, "path": paths})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("audio_dir", type=Path)
    parser.add_argument("model_dir")
    parser.add_argument("--short", action="store_true")
    args = parser.parse_args()
    resampled = write_day(args.audio_dir, args.short)
    audio_files = pa.table({"audio_id": resampled["audio_id"], "source_path": resampled["path"]})
    model = load_model(ModelSettings(args.model_dir, device="cpu"))

    def run():
        return score_day(resampled, audio_files, model, DAY, open_audio=FlacReader)

    run()  # warm-up
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        out = run()
        seconds.append(round(time.perf_counter() - start, 2))
    first = out.scores.to_pylist()[0]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": out.scores.num_rows,
                "first_scores": [round(first[label], 6) for label in EMOTION_LABELS[:3]],
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
