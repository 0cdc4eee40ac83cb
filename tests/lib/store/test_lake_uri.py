"""EMO_LAKE_URI without a cluster: the setting is checked at launch, the local lake never loads s3fs,
and the day lock object's staleness rule. The lake on a real S3 server: tests/cluster/test_s3_lake.py."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from emo_assets.definitions import SettingError, resources_from_env
from emo_assets.lib.store import lake, object_lock
from emo_assets.resources import StorageResource


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://emo-lake/lake", "s3://emo-lake/lake"),
        ("s3://emo-lake/a/b/", "s3://emo-lake/a/b"),
        ("s3://emo-lake", "s3://emo-lake"),
        ("", None),
    ],
)
def test_lake_uri_is_normalised(monkeypatch, uri, expected):
    monkeypatch.setenv("EMO_LAKE_URI", uri)
    storage = resources_from_env()["storage"]
    assert storage.lake_uri == expected
    if expected:
        assert storage.lake_dir == expected
        assert storage.resampled_day_dir("2026-11-20") == f"{expected}/_resampled/date=2026-11-20"
        assert storage.locks_dir == f"{expected}/_locks"
    else:
        assert storage.lake_dir == storage.root / "lake"


@pytest.mark.parametrize("uri", ["gs://bucket/lake", "/data/lake", "s3://", "s3:///prefix", "lake"])
def test_lake_uri_that_cannot_be_used_is_refused_naming_the_setting(monkeypatch, uri):
    monkeypatch.setenv("EMO_LAKE_URI", uri)
    with pytest.raises(SettingError, match="EMO_LAKE_URI"):
        resources_from_env()
    with pytest.raises(Exception, match="EMO_LAKE_URI"):
        StorageResource(lake_uri=uri)


def test_local_lake_paths_are_unchanged(tmp_path):
    assert lake.partition_file(tmp_path, "t", "2026-11-20") == tmp_path / "t" / "date=2026-11-20" / "part-0.parquet"
    assert lake.lake_filesystem(tmp_path) == (None, tmp_path)
    assert lake.partition_file("s3://b-1/x", "t", "2026-11-20") == "s3://b-1/x/t/date=2026-11-20/part-0.parquet"
    assert lake.table_glob("s3://b-1/x", "t") == "s3://b-1/x/t/date=*/*.parquet"


def test_the_local_lake_never_imports_s3fs(tmp_path):
    """`make demo` and every run with EMO_LAKE_URI unset: a day written and read, views made, no s3fs."""
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import duckdb
        import pyarrow as pa
        from emo_assets.definitions import defs, resources_from_env
        from emo_assets.lib.store import lake, warehouse

        defs()
        storage = resources_from_env(data_dir=sys.argv[1])["storage"]
        rows = pa.table({"x": [1, 2]})
        lake.write_partition(storage.lake_dir, "audio_files", "2026-11-20", rows)
        assert lake.read_partition(storage.lake_dir, "audio_files", "2026-11-20").equals(rows)
        warehouse.refresh_lake_views(duckdb.connect(), storage.lake_dir)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("s3fs", "aiobotocore", "botocore")))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "EMO_LAKE_URI"}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def _lock(**fields) -> dict:
    return {
        "holder": "emo run --date 2026-11-20",
        "run_id": None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "renewed_at": NOW.isoformat(),
        **fields,
    }


def test_a_lock_is_stale_only_when_its_holder_is_gone():
    alive, fresh = os.getpid(), NOW + dt.timedelta(seconds=object_lock.STALE_S - 1)
    late = NOW + dt.timedelta(seconds=object_lock.STALE_S + 1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)

    assert object_lock.stale_reason(_lock(pid=alive), None, now=fresh) is None
    assert "is gone" in object_lock.stale_reason(_lock(pid=dead_pid), None, now=fresh)
    # another machine: its pid means nothing here, only its renewals do
    assert object_lock.stale_reason(_lock(pid=dead_pid, host="elsewhere"), None, now=fresh) is None
    assert "not renewed" in object_lock.stale_reason(_lock(pid=dead_pid, host="elsewhere"), None, now=late)
    # a Dagster run's claim: the instance decides, whatever the process (its steps may be processes)
    claim = _lock(run_id="r1", pid=dead_pid, host="elsewhere")
    assert object_lock.stale_reason(claim, lambda run_id: True, now=late) is None
    assert "finished" in object_lock.stale_reason(claim, lambda run_id: False, now=fresh)
    assert object_lock.stale_reason(_lock(renewed_at="garbage"), None, now=fresh) == "it names no holder"
