"""The resample stage writing to an object-store folder: each side of a two-channel call is its own
FLAC object, uploaded whole, its path relative to the lake URI; a re-run reuses them."""

import datetime as dt

import numpy as np
import pytest
import soundfile as sf
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

from emo_assets.lib.audio import resample
from emo_assets.lib.audio.ingest import ingest_day
from emo_assets.lib.files import objectstore

DAY = "2026-11-20"
LAKE = "s3://emo-lake/lake"


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """The store's objects as files under a local folder (``s3://b/k`` -> ``<folder>/b/k``)."""
    root = tmp_path / "store"
    root.mkdir()
    fs = DirFileSystem(path=str(root), fs=LocalFileSystem(auto_mkdir=True))
    monkeypatch.setattr(objectstore, "filesystem", lambda uri: fs)
    return root


def test_each_side_of_a_call_is_uploaded_whole_and_reused(tmp_path, bucket, monkeypatch):
    day = tmp_path / "raw" / DAY
    day.mkdir(parents=True)
    rng = np.random.default_rng(3)
    sides = np.stack([rng.normal(0, 0.1, 16000), rng.normal(0, 0.2, 16000)], axis=1).astype(np.float32)
    sf.write(day / "call.wav", sides, 16000)
    sf.write(day / "solo.wav", rng.normal(0, 0.1, 16000).astype(np.float32), 16000)
    (day / "channels.toml").write_text('[channels]\nagent = "left"\ncustomer = "right"\n')
    landed = ingest_day(tmp_path / "raw", DAY, dt.datetime.now(dt.UTC)).rows
    out_dir = objectstore.join(LAKE, "_resampled", f"date={DAY}")

    first = resample.resample_day(landed, tmp_path / "raw", out_dir, DAY, workers=1, data_root=LAKE)
    assert first.rejects.num_rows == 0
    rows = {(r["channel"], r["path"]) for r in first.rows.to_pylist()}
    ids = dict(zip(landed.column("source_path").to_pylist(), landed.column("audio_id").to_pylist()))
    call, solo = ids[f"{DAY}/call.wav"], ids[f"{DAY}/solo.wav"]
    assert rows == {
        ("agent", f"_resampled/date={DAY}/{call}.agent.flac"),
        ("customer", f"_resampled/date={DAY}/{call}.customer.flac"),
        ("mono", f"_resampled/date={DAY}/{solo}.flac"),
    }
    objects = sorted(p.name for p in (bucket / "emo-lake" / "lake" / "_resampled" / f"date={DAY}").iterdir())
    assert objects == sorted([f"{call}.agent.flac", f"{call}.customer.flac", f"{solo}.flac"])
    customer = bucket / "emo-lake" / "lake" / "_resampled" / f"date={DAY}" / f"{call}.customer.flac"
    samples, rate = sf.read(customer)
    assert rate == 16000 and abs(float(np.std(samples)) - 0.2) < 0.03  # the right side's own samples

    stale = bucket / "emo-lake" / "lake" / "_resampled" / f"date={DAY}" / "gone.agent.flac"
    stale.write_bytes(b"left by a recording no longer in the day")

    def no_decode(*_args, **_kwargs):
        raise AssertionError("a FLAC still in the store was decoded again")

    monkeypatch.setattr(resample, "_resample_one", no_decode)
    again = resample.resample_day(landed, tmp_path / "raw", out_dir, DAY, first.rows, workers=1, data_root=LAKE)
    assert again.rows.to_pylist() == first.rows.to_pylist()
    assert not stale.exists()
    assert customer.exists()
