"""Erasure and retention with the lake on the cluster's S3 server (EMO_LAKE_URI): a recording erased
leaves no trace in any object of the lake's prefix (keys, bytes and, in a versioned bucket, every
old version), nor under the data directory; retention's dry run lists the bucket's day prefixes and
deletes nothing, its real run deletes them.

Every run is a real `emo run`, `emo erase` or `emo retention` in a child process with the tiny random
model, against the moto server of `make cluster-up`. The plain tests write under a prefix of their
own in the cluster's bucket; the versioned ones in a bucket of their own with versioning enabled.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emo_assets.lib.files import objectstore
from emo_assets.lib.store import lake, warehouse
from tests.helpers import DAY, EMO, assert_read_copy_without, emo_env, places_naming, write_small_day

pytestmark = pytest.mark.cluster

RUN_TIMEOUT_S = 600
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
TODAY = (dt.date.fromisoformat(DAY) + dt.timedelta(days=4)).isoformat()  # DAY is 4 days old
KEEP = {"EMO_KEEP_RAW_DAYS": "3", "EMO_KEEP_FLAC_DAYS": "3", "EMO_KEEP_TABLES_DAYS": "3"}


@pytest.fixture(params=["plain", "versioned"])
def lake_uri(request, cluster_env, monkeypatch) -> str:
    """A fresh prefix in the cluster's bucket, or a fresh bucket with versioning enabled."""
    for name in AWS_VARS:
        monkeypatch.setenv(name, cluster_env[name])
    tag = uuid.uuid4().hex[:12]
    if request.param == "plain":
        return f"{cluster_env['EMO_LAKE_URI']}/test-{tag}"
    bucket = f"emo-versioned-{tag}"
    fs = objectstore.filesystem(f"s3://{bucket}")
    fs.mkdir(bucket)
    fs.call_s3("put_bucket_versioning", Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return f"s3://{bucket}/lake"


def _emo(args: list[str], data_dir: Path, model_dir: Path | None, cluster_env: dict, lake_uri: str, **extra):
    """`emo ARGS --data-dir DATA` in a child process with the cluster's credentials and EMO_LAKE_URI."""
    env = emo_env(**{k: cluster_env[k] for k in AWS_VARS}, EMO_LAKE_URI=lake_uri, **extra)
    command = [EMO, *args, "--data-dir", str(data_dir)]
    if model_dir is not None:
        command += ["--model", str(model_dir), "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S)
    return done.returncode, done.stdout, done.stderr


def _run_day(data_dir: Path, model_dir: Path, cluster_env: dict, lake_uri: str) -> None:
    code, _, err = _emo(["run", "--date", DAY], data_dir, model_dir, cluster_env, lake_uri)
    assert code == 0, err[-3000:]


def _versions(lake_uri: str) -> list[tuple[str, str | None]]:
    """(key, version id) of every object under the lake's prefix: every version and delete marker
    in a versioned bucket (a marker's version id is None: it holds no bytes), the objects otherwise."""
    fs = objectstore.filesystem(lake_uri)
    _, bucket, prefix = objectstore.split_uri(lake_uri)
    if not objectstore.is_versioned(lake_uri):
        return [(path.removeprefix(f"{bucket}/"), None) for path in fs.find(f"{bucket}/{prefix}/")]
    found, page = [], {}
    while True:
        listed = fs.call_s3("list_object_versions", Bucket=bucket, Prefix=f"{prefix}/", **page)
        found += [(v["Key"], v["VersionId"]) for v in listed.get("Versions", [])]
        found += [(m["Key"], None) for m in listed.get("DeleteMarkers", [])]
        if not listed.get("IsTruncated"):
            return found
        page = {"KeyMarker": listed["NextKeyMarker"], "VersionIdMarker": listed["NextVersionIdMarker"]}


def bucket_traces(lake_uri: str, audio_id: str) -> list[str]:
    """Every object (every version of it, in a versioned bucket) under the lake's prefix whose key
    names ``audio_id`` or whose bytes hold it: as text, as numpy's UTF-32, as the binary digest, or
    in a decoded Parquet row. The test's own reading: s3fs, not the product's code."""
    import s3fs

    _, bucket, _ = objectstore.split_uri(lake_uri)
    reader = s3fs.S3FileSystem(version_aware=True, use_listings_cache=False)
    needles = (audio_id.encode(), audio_id.encode("utf-32-le"), bytes.fromhex(audio_id))
    found = []
    for key, version in _versions(lake_uri):
        if audio_id in key:
            found.append(f"{key} (key, version {version})")
            continue
        if version is None and objectstore.is_versioned(lake_uri):
            continue  # a delete marker: no bytes
        data = reader.cat_file(f"{bucket}/{key}" + (f"?versionId={version}" if version else ""))
        hit = any(n in data for n in needles)
        if not hit and key.endswith(".parquet"):
            hit = audio_id in json.dumps(pq.read_table(pa.BufferReader(data)).to_pylist(), default=str)
        if hit:
            found.append(f"{key} (bytes, version {version})")
    return found


def test_an_erased_recording_leaves_no_trace_in_the_bucket_nor_the_data_dir(
    cluster_env, lake_uri, tiny_model_dir, tmp_path
):
    """A day on the S3 lake; `emo erase` of one recording; then every object of the lake's prefix
    (every version, in a versioned bucket) and every byte under the data directory but the erasure
    log is read: none names it. The other recordings read back, their partitions verified against
    their rewritten SHA-256 objects; a re-run with the same bytes landing again does not bring it back."""
    data = tmp_path / "data"
    write_small_day(data / "raw" / DAY)
    _run_day(data, tiny_model_dir, cluster_env, lake_uri)
    files = lake.read_partition(lake_uri, "audio_files", DAY).sort_by("source_path")
    victim, kept = files.column("audio_id")[0].as_py(), files.column("audio_id")[1].as_py()
    source = files.column("source_path")[0].as_py()
    raw_bytes = (data / "raw" / source).read_bytes()
    before = bucket_traces(lake_uri, victim)
    # the scan finds the recording where the platform put it, so finding nothing afterwards means something
    for place in (
        f"_resampled/date={DAY}/{victim}.flac",
        "/audio_files/date=",
        "/emotion_scores/date=",
        "/_published/",
    ):
        assert any(place in trace for trace in before), (place, before)
    assert places_naming(data, victim) != []

    code, out, err = _emo(["erase", victim], data, None, cluster_env, lake_uri)
    print(out)
    assert code == 0, (out[-3000:], err[-3000:])
    assert victim not in out and victim not in err
    assert "lake:audio_files/date=" in out and "flac_files" in out and "published_files_deleted" in out
    if objectstore.is_versioned(lake_uri):
        assert "object_versions_deleted" in out

    assert bucket_traces(lake_uri, victim) == []
    assert places_naming(data, victim, skip=data / "erasure") == []
    assert not (data / "raw" / source).exists()
    for table in ("audio_files", "resampled_audio", "emotion_scores", "emotion_embeddings"):
        path = lake.partition_file(lake_uri, table, DAY)
        lake.verify_partition(lake_uri, path)  # the SHA-256 object was rewritten with the day
        ids = lake.read_partition(lake_uri, table, DAY).column("audio_id").to_pylist()
        assert victim not in ids and kept in ids and len(set(ids)) == 2, table
    assert_read_copy_without(data, victim, kept)

    (data / "raw" / source).write_bytes(raw_bytes)  # the same recording lands again (a re-synced backup)
    _run_day(data, tiny_model_dir, cluster_env, lake_uri)
    assert not (data / "raw" / source).exists()  # deleted on sight by ingest: its tombstone
    assert bucket_traces(lake_uri, victim) == []
    assert places_naming(data, victim, skip=data / "erasure") == []
    assert kept in lake.read_partition(lake_uri, "emotion_scores", DAY).column("audio_id").to_pylist()


def test_retention_lists_the_bucket_days_in_a_dry_run_then_deletes_them(
    cluster_env, lake_uri, tiny_model_dir, tmp_path
):
    """`emo retention --dry-run` names the day's prefixes in the bucket (FLACs, every table and
    checksum folder) and changes no object; the real run leaves no object (no version, in a
    versioned bucket) of the day under the lake's prefix, and the analysts' copy no row of it."""
    data = tmp_path / "data"
    write_small_day(data / "raw" / DAY, n=2)
    _run_day(data, tiny_model_dir, cluster_env, lake_uri)
    fs = objectstore.filesystem(lake_uri)
    objects = {path: fs.cat_file(path) for path in fs.find(objectstore.fs_path(lake_uri) + "/")}
    versions = sorted(_versions(lake_uri), key=str)
    day_keys = [k for k, _ in versions if f"/date={DAY}/" in k]
    assert any("/_resampled/" in k for k in day_keys) and any("/_published/" in k for k in day_keys)

    code, out, err = _emo(["retention", "--dry-run", "--today", TODAY], data, None, cluster_env, lake_uri, **KEEP)
    print(out)
    assert code == 0, err[-3000:]
    assert f"would delete flac   {DAY}  {lake_uri}/_resampled/date={DAY}" in out
    assert f"would delete tables {DAY}  {lake_uri}/emotion_scores/date={DAY}" in out
    assert f"would delete tables {DAY}  {lake_uri}/_checksums/emotion_scores/date={DAY}" in out
    assert f"would delete raw    {DAY}" in out
    assert {path: fs.cat_file(path) for path in fs.find(objectstore.fs_path(lake_uri) + "/")} == objects
    assert sorted(_versions(lake_uri), key=str) == versions  # no object written, no version made

    code, out, err = _emo(["retention", "--today", TODAY], data, None, cluster_env, lake_uri, **KEEP)
    print(out)
    assert code == 0, err[-3000:]
    left = [k for k, _ in _versions(lake_uri) if f"/date={DAY}/" in k]
    assert left == [], left
    assert not (data / "raw" / DAY).exists()
    assert lake.partition_days(lake_uri, "emotion_scores") == []
    con = warehouse.open_read_copy(data)
    try:
        assert con.execute("SELECT count(*) FROM emotion_scores").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM embedding_index").fetchone()[0] == 0
    finally:
        con.close()
