"""Retention (issue 14, part 2): days past EMO_KEEP_*_DAYS are deleted, a dry run only lists them,
and the scheduled job enforces the settings."""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest

from emo_assets.cli import main
from emo_assets.definitions import build_definitions, resources_from_env
from emo_assets.lib.analytics import ann, fitted
from emo_assets.lib.store import lake, warehouse
from emo_assets.resources import SettingError, StorageResource
from tests.helpers import DAY, OTHER_DAY, failed_steps, materialize, write_small_day

KEEP = {"EMO_KEEP_RAW_DAYS": "3", "EMO_KEEP_FLAC_DAYS": "3", "EMO_KEEP_TABLES_DAYS": "3"}
TODAY = (dt.date.fromisoformat(DAY) + dt.timedelta(days=4)).isoformat()  # DAY is 4 days old, OTHER_DAY 3


@pytest.fixture
def two_days(tmp_path, tiny_model_dir, monkeypatch):
    data = tmp_path / "data"
    for day in (DAY, OTHER_DAY):
        write_small_day(data / "raw" / day, n=2)
        result = materialize(data, tiny_model_dir, day=day)
        assert result.success, failed_steps(result)
    for name, value in KEEP.items():
        monkeypatch.setenv(name, value)
    return data


def _state(data):
    con = warehouse.open_read_copy(data)
    try:
        index_days = [str(r[0]) for r in con.execute("SELECT DISTINCT date FROM embedding_index ORDER BY 1").fetchall()]
    finally:
        con.close()
    model_id = ann.indexed_models(data / "similarity")[0]
    return {
        "raw": sorted(p.name for p in (data / "raw").iterdir()),
        "flac": sorted(p.name for p in (data / "resampled").iterdir()),
        "lake": lake.partition_days(data / "lake", "emotion_scores"),
        "warehouse": index_days,
        "similarity": ann.indexed_days(data / "similarity", model_id),
    }


def test_dry_run_lists_what_retention_deletes_and_deletes_nothing(two_days, capsys):
    data = two_days
    before = _state(data)
    assert main(["retention", "--dry-run", "--today", TODAY, "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"would delete raw    {DAY}" in out and f"would delete flac   {DAY}" in out
    assert f"would delete tables {DAY}" in out and f"lake/emotion_scores/date={DAY}" in out
    assert OTHER_DAY not in out
    assert _state(data) == before


def test_retention_deletes_the_days_past_their_time_everywhere(two_days):
    data = two_days
    assert main(["retention", "--today", TODAY, "--data-dir", str(data)]) == 0
    assert _state(data) == {
        "raw": [OTHER_DAY],
        "flac": [f"date={OTHER_DAY}"],
        "lake": [OTHER_DAY],
        "warehouse": [OTHER_DAY],
        "similarity": [OTHER_DAY],
    }
    assert not list((data / "lake").rglob(f"date={DAY}"))
    # the published copies of the day are gone at once, not after the grace period
    assert not list((data / "published").rglob(f"date={DAY}/*.parquet"))
    for path in (data / "published").rglob("*.parquet"):
        dates = pq.read_table(path).column("date").to_pylist() if "date" in pq.read_schema(path).names else []
        assert dt.date.fromisoformat(DAY) not in dates, path
    assert fitted.is_stale(data / "models" / "emotion_cluster_model.pkl")


def test_retention_settings_are_checked(monkeypatch):
    monkeypatch.setenv("EMO_KEEP_RAW_DAYS", "0")
    with pytest.raises(SettingError, match="EMO_KEEP_RAW_DAYS"):
        resources_from_env()
    monkeypatch.setenv("EMO_KEEP_RAW_DAYS", "30")
    assert resources_from_env()["storage"].keep_raw_days == 30


def test_the_scheduled_job_enforces_retention(tmp_path):
    today = dt.datetime.now(dt.UTC).date()
    old = (today - dt.timedelta(days=10)).isoformat()
    for day in (old, today.isoformat()):
        (tmp_path / "raw" / day).mkdir(parents=True)
        (tmp_path / "raw" / day / "call.wav").write_bytes(b"RIFF")
    storage = StorageResource(data_dir=str(tmp_path), keep_raw_days=7)
    defs = build_definitions({"storage": storage, "emotion_model": None, "ray": None})
    schedule = defs.resolve_schedule_def("retention_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    result = defs.resolve_job_def("retention_job").execute_in_process()
    assert result.success
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [today.isoformat()]
