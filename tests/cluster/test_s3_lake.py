"""The lake on the cluster's S3 server (EMO_LAKE_URI): the same rows as the local lake, and the faults
of issue 9 around it: the S3 server restarted between two stages, a run killed with SIGKILL mid-day,
and a second run of the same day from another machine sharing the bucket.

Every run is a real `emo run` (or, for single stages, ``dg.materialize`` in a child process) with
the tiny random model, against the moto server of `make cluster-up`. Each test writes under a
prefix of its own in the bucket. "Another machine" is another data directory: its local locks and
warehouse are its own, only the bucket is shared.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emo_assets.lib import schemas
from emo_assets.lib.audio.resample import resolve_paths
from emo_assets.lib.files import objectstore
from emo_assets.lib.store import lake
from emo_assets.resources import PROJECT_ROOT
from tests.cluster.services import AWS_VARS, RUN_TIMEOUT_S, day_tables, emo_run, finish, lake_env
from tests.helpers import DAY, emo_env, write_small_day

pytestmark = pytest.mark.cluster


def _s3(command: str) -> None:
    done = subprocess.run(
        [str(PROJECT_ROOT / "cluster" / "s3.sh"), command],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stderr


def _stage_child(stage: str, data_dir: Path, model_dir: Path, env: dict) -> tuple[int, str, str]:
    """One stage of the day (assets picked by name) materialized in a child process, as a run of
    those steps would: resources from the environment (EMO_LAKE_URI included)."""
    code = textwrap.dedent(
        """
        import sys
        import dagster as dg
        from emo_assets.assets import all_assets
        from emo_assets.definitions import resources_from_env
        from tests.helpers import step_failure_messages

        stage, day, data_dir, model = sys.argv[1:5]
        picked = {"ingest": {"audio_files", "resampled_audio"}, "score": {"emotion_tables"}}[stage]
        assets = [a for a in all_assets() if a.node_def.name in picked]
        result = dg.materialize(assets, partition_key=day, raise_on_error=False,
                                resources=resources_from_env(data_dir=data_dir, model=model, device="cpu"))
        print(step_failure_messages(result), file=sys.stderr)
        sys.exit(0 if result.success else 1)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, stage, DAY, str(data_dir), str(model_dir)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env,
        cwd=PROJECT_ROOT,
    )
    return done.returncode, done.stdout, done.stderr


def test_s3_day_equals_the_local_day_and_survives_an_s3_restart_between_stages(
    cluster_env, s3_lake, local_day, tiny_model_dir, tmp_path
):
    """Stage 1 of the day on S3; the S3 server stops; stage 2 fails with a clear error naming the
    store and nothing is quarantined; the server restarts with its objects; `emo run` of the day then
    completes, reusing stage 1's FLACs, and every lake and warehouse table equals the local lake's."""
    data_dir = tmp_path / "data"
    write_small_day(data_dir / "raw" / DAY)
    env = lake_env(cluster_env, s3_lake)

    code, _, err = _stage_child("ingest", data_dir, tiny_model_dir, env)
    assert code == 0, err[-3000:]
    flacs = _objects(f"{s3_lake}/_resampled")
    assert len(flacs) == 3

    _s3("stop")
    try:
        started = time.monotonic()
        code, _, err = _stage_child("score", data_dir, tiny_model_dir, env)
        print(f"stage 2 with the S3 server down: failed after {time.monotonic() - started:.1f} s")
    finally:
        _s3("start")
    assert code == 1
    print(next((line for line in err.splitlines() if "object store did not answer" in line), err[-2000:]))
    assert "ObjectStoreError" in err and "the object store did not answer" in err, err[-3000:]
    assert "nothing quarantined" in err and cluster_env["AWS_ENDPOINT_URL"] in err, err[-3000:]
    assert cluster_env["AWS_SECRET_ACCESS_KEY"] not in err.replace(cluster_env["AWS_ACCESS_KEY_ID"], "")
    # The restarted server holds stage 1's objects, byte for byte; stage 2 wrote nothing.
    assert _objects(f"{s3_lake}/_resampled") == flacs
    assert lake.read_partition(s3_lake, "quarantine", DAY) is None
    assert lake.read_partition(s3_lake, "emotion_scores", DAY) is None

    uploaded = _modified(f"{s3_lake}/_resampled")
    time.sleep(1.5)  # S3 times have whole seconds: a FLAC uploaded again would show a later time
    code, out, err = finish(emo_run(data_dir, tiny_model_dir, env))
    assert code == 0, err[-3000:]
    assert _objects(f"{s3_lake}/_resampled") == flacs
    assert _modified(f"{s3_lake}/_resampled") == uploaded  # reused, not decoded and uploaded again
    assert not (data_dir / "lake").exists() and not (data_dir / "resampled").exists()  # all in the bucket
    resampled = lake.read_partition(s3_lake, "resampled_audio", DAY)
    for audio_id, path in zip(resampled["audio_id"].to_pylist(), resampled["path"].to_pylist(), strict=True):
        assert path == f"_resampled/date={DAY}/{audio_id}.flac"  # relative to EMO_LAKE_URI: a moved prefix stays whole
    located = resolve_paths(resampled, s3_lake)["path"].to_pylist()
    assert sorted(objectstore.fs_path(uri) for uri in located) == sorted(flacs)
    # Published for the analysts by server-side copies into the bucket, not copied to the data directory.
    published = _objects(f"{s3_lake}/_published")
    for table in schemas.LAKE_TABLES:
        if lake.partition_days(s3_lake, table):
            day_objects = [data for path, data in published.items() if f"/_published/{table}/date={DAY}/" in path]
            assert day_objects == [objectstore.cat(lake.partition_file(s3_lake, table, DAY))], table
            assert not (data_dir / "published" / table).exists(), table
    s3_tables, local_tables = day_tables(data_dir, s3_lake), day_tables(local_day, local_day / "lake")
    assert set(s3_tables) == set(local_tables)
    for name, rows in local_tables.items():
        assert s3_tables[name] == rows, name
    assert len(local_tables["lake:emotion_scores"]) == 3 and len(local_tables["lake:quarantine"]) == 1


def _objects(uri: str) -> dict[str, bytes]:
    """Every object under ``uri``: its path -> its bytes."""
    fs = objectstore.filesystem(uri)
    return {path: fs.cat_file(path) for path in fs.find(objectstore.fs_path(uri))}


def _modified(uri: str) -> dict[str, object]:
    fs = objectstore.filesystem(uri)
    return {path: fs.info(path)["LastModified"] for path in fs.find(objectstore.fs_path(uri))}


# A run that stops in the middle of its day: resampled_audio's decoding blocks once the FLACs are
# being written, after a marker file says so (test-only code in the child; the product knows nothing of it).
PAUSED_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from emo_assets import cli
    from emo_assets.lib.audio import resample

    real = resample._resample_one
    def paused(*args):
        out = real(*args)
        Path(sys.argv[1]).write_text("mid-day")
        time.sleep(3600)
        return out
    resample._resample_one = paused
    sys.exit(cli.main(["run", "--date", sys.argv[2], "--data-dir", sys.argv[3], "--model", sys.argv[4], "--device", "cpu"]))
    """
)


def test_second_run_of_the_day_on_the_same_bucket_is_refused_and_a_killed_run_recovers(
    cluster_env, s3_lake, local_day, tiny_model_dir, tmp_path
):
    """Machine A's run of the day is mid-day (a FLAC uploaded); machine B (another data directory,
    the same bucket) is refused, naming A; A is killed with SIGKILL (its lock object stays behind);
    B's next run takes the lock over (its holder's process is gone), completes, and gives the local
    lake's rows."""
    env = lake_env(cluster_env, s3_lake)
    machine_a, machine_b = tmp_path / "a", tmp_path / "b"
    for data_dir in (machine_a, machine_b):
        write_small_day(data_dir / "raw" / DAY)
    marker = tmp_path / "mid-day"
    run_a = subprocess.Popen(
        [sys.executable, "-c", PAUSED_RUN, str(marker), DAY, str(machine_a), str(tiny_model_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not marker.exists():
            assert run_a.poll() is None, run_a.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "run A never reached the middle of its day"
            time.sleep(0.5)
        lock = f"{s3_lake}/_locks/{DAY}.lock"
        assert _objects(lock), "run A holds no lock object"

        code, out, err = finish(emo_run(machine_b, tiny_model_dir, env))
        assert code == 3, (out[-2000:], err[-3000:])
        print(err.strip().splitlines()[-1])
        assert f"day {DAY} is being processed by emo run --date {DAY}" in err
        assert f"pid {run_a.pid}" in err and lock in err, err[-2000:]
        assert lake.read_partition(s3_lake, "emotion_scores", DAY) is None  # B wrote nothing

        os.killpg(run_a.pid, signal.SIGKILL)
        run_a.communicate(timeout=60)
        assert run_a.returncode == -signal.SIGKILL
        assert _objects(lock), "the killed run's lock object should still be there"
        for path in _objects(s3_lake):
            if path.endswith(".parquet"):
                with objectstore.open_input(f"s3://{path}") as f:
                    pq.read_table(f)  # every object in the bucket is whole
    finally:
        if run_a.poll() is None:
            os.killpg(run_a.pid, signal.SIGKILL)
            run_a.communicate()

    code, out, err = finish(emo_run(machine_b, tiny_model_dir, env))
    assert code == 0, err[-3000:]
    assert "took over the day lock" in err and "is gone" in err, err[-3000:]
    print(next(line for line in err.splitlines() if "took over the day lock" in line))
    assert not _objects(f"{s3_lake}/_locks"), "a finished `emo run` deletes its lock object"
    s3_tables, local_tables = day_tables(machine_b, s3_lake), day_tables(local_day, local_day / "lake")
    for name, rows in local_tables.items():
        assert s3_tables[name] == rows, name


def _rewrite(uri: str, change) -> None:
    """Replace the object ``uri`` by ``change(its bytes)``, as bit rot or a broken copy would."""
    fs = objectstore.filesystem(uri)
    fs.pipe_file(objectstore.fs_path(uri), change(fs.cat_file(objectstore.fs_path(uri))))


def _flip(pos: int):
    def flip(data: bytes) -> bytes:
        changed = bytearray(data)
        changed[pos if pos >= 0 else len(data) + pos] ^= 0x10
        return bytes(changed)

    return flip


def test_s3_partitions_carry_their_checksum_objects_and_fail_them_when_corrupt(cluster_env, s3_lake):
    """Lake integrity in the bucket, as on disk: the partition's SHA-256 is an object under
    ``_checksums/`` (the table's prefix holds only Parquet), its pages carry CRC32s verified on read;
    a flipped byte, a flipped page without its record and a truncated object are each a
    CorruptPartitionError naming the object, set aside for reuse until the day is written again."""
    rows = pa.table({"audio_id": [f"a{i}" for i in range(50)], "x": [float(i) for i in range(50)]})
    path = lake.write_partition(s3_lake, "t", DAY, rows)
    record = lake.checksum_file(s3_lake, path)
    assert record == f"{s3_lake}/_checksums/t/date={DAY}/part-0.parquet.sha256"
    fs = objectstore.filesystem(s3_lake)
    original = fs.cat_file(objectstore.fs_path(path))
    assert fs.cat_file(objectstore.fs_path(record)).decode().strip() == hashlib.sha256(original).hexdigest()
    assert fs.find(objectstore.fs_path(f"{s3_lake}/t")) == [objectstore.fs_path(path)]
    assert lake.read_partition(s3_lake, "t", DAY).equals(rows)

    _rewrite(path, _flip(-40))  # the footer: only the SHA-256 covers it
    with pytest.raises(lake.CorruptPartitionError, match="SHA-256") as caught:
        lake.read_partition(s3_lake, "t", DAY)
    assert path in str(caught.value) and "re-run the day" in str(caught.value)

    _rewrite(path, lambda _: original)
    objectstore.remove(record)  # as if its writer was killed between the upload and the record
    assert lake.read_partition(s3_lake, "t", DAY).equals(rows)
    chunk = pq.ParquetFile(pa.BufferReader(original)).metadata.row_group(0).column(1)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    _rewrite(path, _flip(start + chunk.total_compressed_size - 4))  # the last bytes of a data page
    with pytest.raises(lake.CorruptPartitionError, match="CRC"):
        lake.read_partition(s3_lake, "t", DAY)

    _rewrite(path, lambda data: original[: len(original) // 2])
    reused = lake.read_reusable(s3_lake, "t", DAY)
    assert reused.rows is None and "magic bytes" in reused.corrupt
    with pytest.raises(lake.CorruptPartitionError, match="2026-11-20"):
        lake.read_table(s3_lake, "t")

    lake.write_partition(s3_lake, "t", DAY, rows)  # the stage writes the day again: sound, recorded
    assert lake.read_reusable(s3_lake, "t", DAY) == lake.Reused(rows)
    assert lake.recorded_sha256(s3_lake, path) == lake.file_sha256(path) == hashlib.sha256(original).hexdigest()


def test_corrupt_objects_in_the_bucket_are_recomputed_from_their_source(
    cluster_env, s3_lake, local_day, tiny_model_dir, tmp_path
):
    """A day on the S3 lake, then a flipped byte in its emotion_scores object, a flipped footer in its
    resampled_audio object and a truncated emotion_segments object (its SHA-256 object removed): the
    next `emo run` recomputes the three from the FLACs and raw files, names the recordings it
    repaired, and every table equals the local lake's again."""
    data_dir = tmp_path / "data"
    write_small_day(data_dir / "raw" / DAY)
    env = lake_env(cluster_env, s3_lake)
    code, _, err = finish(emo_run(data_dir, tiny_model_dir, env))
    assert code == 0, err[-3000:]
    ids = sorted(lake.read_partition(s3_lake, "emotion_scores", DAY).column("audio_id").to_pylist())

    scores = lake.partition_file(s3_lake, "emotion_scores", DAY)
    _rewrite(scores, _flip(len(objectstore.cat(scores)) // 2))
    _rewrite(lake.partition_file(s3_lake, "resampled_audio", DAY), _flip(-40))
    segments = lake.partition_file(s3_lake, "emotion_segments", DAY)
    objectstore.remove(lake.checksum_file(s3_lake, segments))
    _rewrite(segments, lambda data: data[: len(data) // 2])
    for table in ("emotion_scores", "resampled_audio", "emotion_segments"):
        assert lake.read_reusable(s3_lake, table, DAY).corrupt, table

    code, out, err = finish(emo_run(data_dir, tiny_model_dir, env))
    assert code == 0, err[-3000:]
    summary = out.split(f"Summary for {DAY}")[-1].splitlines()
    print("\n".join(line for line in summary if "repaired" in line or line.startswith("    ")))
    assert "  repaired         3  (stored data failed its integrity check: recomputed from its source)" in summary
    for table in ("emotion_scores", "resampled_audio", "emotion_segments"):
        assert f"    {table}: {', '.join(ids)}" in summary, (table, summary)
        assert lake.read_reusable(s3_lake, table, DAY).corrupt is None, table
    s3_tables, local_tables = day_tables(data_dir, s3_lake), day_tables(local_day, local_day / "lake")
    for name, rows in local_tables.items():
        assert s3_tables[name] == rows, name


def test_unreachable_bucket_is_refused_before_any_file_is_touched(cluster_env, tiny_model_dir, tmp_path):
    data_dir = tmp_path / "data"
    write_small_day(data_dir / "raw" / DAY)
    env = lake_env(cluster_env, "s3://no-such-bucket-emo/lake")
    code, out, err = finish(emo_run(data_dir, tiny_model_dir, env), timeout=300)
    assert code == 2, (out[-2000:], err[-2000:])
    assert "EMO_LAKE_URI=s3://no-such-bucket-emo/lake" in err and "does not exist" in err, err[-2000:]
    assert not (data_dir / "lake").exists() and not (data_dir / "locks").exists()


HOLD_THE_DAY = textwrap.dedent(
    """
    import os, sys, time
    from emo_assets.lib.files import objectstore
    from emo_assets.lib.store import day_lock

    locks, day, go, hold_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    objectstore.exists(locks)  # connected, so that the race is the store's, not the imports'
    print("ready", flush=True)
    while not os.path.exists(go):  # every child tries at the same instant
        time.sleep(0.005)
    try:
        with day_lock.hold_day(locks, day, holder="racer"):
            print("won", flush=True)
            time.sleep(hold_s)
    except day_lock.DayLockedError:
        print("refused", flush=True)
    """
)


def test_of_runs_racing_for_a_day_the_store_accepts_exactly_one_and_its_lock_is_renewed(cluster_env, s3_lake, tmp_path):
    """Four processes take the day's lock object at the same instant (If-None-Match: *): one wins,
    three are refused; the winner renews the object while it holds it and deletes it at the end."""
    from emo_assets.lib.store import object_lock

    locks = f"{s3_lake}/_locks"
    lock = object_lock.lock_uri(locks, DAY)
    env = {**emo_env(**{k: cluster_env[k] for k in AWS_VARS}), "PYTHONPATH": str(PROJECT_ROOT)}
    go = tmp_path / "go"
    hold_s = object_lock.RENEW_S * 2.5
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", HOLD_THE_DAY, locks, DAY, str(go), str(hold_s)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    for racer in racers:  # every child imported and connected (a loaded machine takes its time)
        assert racer.stdout.readline().strip() == "ready", racer.communicate()[1][-2000:]
    go.touch()
    deadline = time.monotonic() + 30
    while (first := object_lock.read_lock(lock)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(object_lock.RENEW_S * 1.5)
    later = object_lock.read_lock(lock)
    outcomes = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err[-2000:]
        outcomes.append(out.strip())
    assert sorted(outcomes) == ["refused", "refused", "refused", "won"]
    assert first is not None and later is not None
    assert later[0]["pid"] == first[0]["pid"] and later[0]["renewed_at"] > first[0]["renewed_at"]
    assert object_lock.read_lock(lock) is None  # released


def test_a_dagster_run_claim_on_the_bucket_follows_the_instance(cluster_env, s3_lake):
    """A Dagster run's claim (its first step, in a process that has ended since) refuses another run
    while the instance says the first is active, and is taken over once it is finished."""
    from emo_assets.lib.store import day_lock, object_lock

    locks = f"{s3_lake}/_locks"
    claim = "from emo_assets.lib.store import day_lock; import sys; day_lock.claim_day(sys.argv[1], sys.argv[2], 'run-1', 'dagster run run-1', lambda r: True)"
    env = {**emo_env(**{k: cluster_env[k] for k in AWS_VARS}), "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-c", claim, locks, DAY], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]

    with pytest.raises(day_lock.DayLockedError, match=r"processed by run run-1, dagster run run-1 \(pid"):
        day_lock.claim_day(locks, DAY, "run-2", "dagster run run-2", is_active=lambda run_id: True, wait_s=0)
    day_lock.claim_day(locks, DAY, "run-2", "dagster run run-2", is_active=lambda run_id: run_id != "run-1")
    info, _ = object_lock.read_lock(object_lock.lock_uri(locks, DAY))
    assert (info["run_id"], info["pid"]) == ("run-2", os.getpid())
