"""Long recordings with bounded memory, measured in child processes (peak RSS from getrusage).

Decoding and resampling are measured on a real 2-hour file. The model is measured on a 3-minute
file, scored window by window (a 2-hour file takes minutes of CPU even with the tiny model; the
memory per window does not depend on the length).
"""

import json
import subprocess
import sys

import numpy as np
import soundfile as sf

DAY = "2026-11-20"

MEASURE = """
import json, resource, sys
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

RESAMPLE_CHILD = (
    MEASURE
    + """
import datetime as dt
from pathlib import Path
from emo_assets.lib.audio.ingest import ingest_day
from emo_assets.lib.audio.resample import resample_day
raw_root, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
files = ingest_day(raw_root, "2026-11-20", dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)).rows
baseline = rss_mb()
out = resample_day(files, raw_root, out_dir, "2026-11-20", workers=1)
print(json.dumps({"baseline_mb": baseline, "peak_mb": rss_mb(), "rows": out.rows.to_pylist(),
                  "rejects": out.rejects.to_pylist()}, default=str))
"""
)

SCORE_CHILD = (
    MEASURE
    + """
import datetime as dt
from pathlib import Path
import pyarrow as pa
from emo_assets.lib.audio.load import FlacReader
from emo_assets.lib.model.loading import load_model
from emo_assets.lib.model.scoring import score_day
from emo_assets.lib.model.settings import ModelSettings
flac, model_dir = sys.argv[1], sys.argv[2]
model = load_model(ModelSettings(model_dir, device="cpu"))
import soundfile as sf
seconds = sf.info(flac).frames / 16000
resampled = pa.table({"audio_id": ["long"], "path": [flac], "duration_s": [seconds]})
audio_files = pa.table({"audio_id": ["long"], "source_path": ["2026-11-20/long.wav"]})
model.infer([__import__("numpy").zeros(16000 * 30, "float32")])  # warm up: one full window
baseline = rss_mb()
out = score_day(resampled, audio_files, model, "2026-11-20", open_audio=FlacReader)
print(json.dumps({"baseline_mb": baseline, "peak_mb": rss_mb(), "scores": out.scores.to_pylist(),
                  "rejects": out.rejects.to_pylist(), "inferred": out.inferred}, default=str))
"""
)


def _child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_hour_recording_resamples_in_bounded_memory(tmp_path):
    day_dir = tmp_path / "raw" / DAY
    day_dir.mkdir(parents=True)
    noise = (np.random.default_rng(0).standard_normal(8000 * 60) * 0.1).astype(np.float32)
    with sf.SoundFile(day_dir / "two_hours.wav", "w", 8000, 1, "PCM_16", format="WAV") as wav:
        for _ in range(120):  # 2 h at 8 kHz: 115 MB of 16-bit PCM, 460 MB as 16 kHz float32
            wav.write(noise)
    measured = _child(RESAMPLE_CHILD, str(tmp_path / "raw"), str(tmp_path / "resampled"))
    print(f"2 h resample: baseline {measured['baseline_mb']:.0f} MB, peak {measured['peak_mb']:.0f} MB")
    assert measured["rejects"] == []
    [row] = measured["rows"]
    assert row["duration_s"] == 7200.0
    assert sf.info(row["path"]).frames == 7200 * 16000
    # Whole-file decoding would hold >= 690 MB (8 kHz and 16 kHz float32 copies) at once.
    assert measured["peak_mb"] - measured["baseline_mb"] < 120, measured


def test_three_minute_recording_is_scored_window_by_window_in_bounded_memory(tmp_path, tiny_model_dir):
    flac = tmp_path / "long.flac"
    rng = np.random.default_rng(1)
    with sf.SoundFile(flac, "w", 16000, 1, "PCM_16", format="FLAC") as out:
        for _ in range(3):
            out.write((rng.standard_normal(16000 * 60) * 0.1).astype(np.float32))
    measured = _child(SCORE_CHILD, str(flac), str(tiny_model_dir))
    print(f"3 min scoring: baseline {measured['baseline_mb']:.0f} MB, peak {measured['peak_mb']:.0f} MB")
    assert measured["rejects"] == [] and measured["inferred"] == 1
    [row] = measured["scores"]
    labels = ("angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown")
    assert abs(sum(row[label] for label in labels) - 1.0) < 1e-5
    # One 30 s window at a time. In one piece, each attention layer's scores alone would need
    # 9000^2 frames x 2 heads x 4 bytes = 648 MB.
    assert measured["peak_mb"] - measured["baseline_mb"] < 200, measured
