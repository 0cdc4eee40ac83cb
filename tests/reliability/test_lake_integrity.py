"""Issue 12 items 3-4 (the lake's side): a flipped or truncated lake partition, or a reused row that
cannot be what the model wrote, is recomputed from its source and named by audio_id; a failing score
check names the rows; a copied data directory's resampled_audio points at its own FLACs."""

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
import soundfile as sf

from emo_assets.checks import scores_check_result
from emo_assets.lib import schemas
from emo_assets.lib.audio.ingest import ingest_day
from emo_assets.lib.audio.resample import resample_day, resolve_paths
from emo_assets.lib.model.score_rows import scores_off, unsound_score_rows
from emo_assets.lib.store import lake

DAY = "2026-11-20"


def _flip(path: Path, positions: list[int]) -> None:
    data = bytearray(path.read_bytes())
    for pos in positions:
        data[pos] ^= 0x10
    path.write_bytes(bytes(data))


def _materializations(result) -> dict[str, dict]:
    return {
        e.asset_key.path[-1]: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }


def _lake(data_dir: Path, rel) -> dict[str, pa.Table]:
    """The lake's tables without ``ingested_at`` (a recomputed audio_files sees the files anew)."""
    return {
        name: t.drop_columns(["ingested_at"]) if "ingested_at" in t.column_names else t
        for name, t in rel.lake_tables(data_dir).items()
    }


def test_flipped_and_truncated_partitions_are_recomputed_and_named(tmp_path, tiny_model_dir, rel):
    rel.write_small_day(tmp_path / "raw" / DAY)
    assert rel.materialize(tmp_path, tiny_model_dir).success
    reference = _lake(tmp_path, rel)
    ids = sorted(lake.read_partition(tmp_path / "lake", "emotion_scores", DAY).column("audio_id").to_pylist())

    scores = lake.partition_file(tmp_path / "lake", "emotion_scores", DAY)
    _flip(scores, [scores.stat().st_size // 2])  # one byte of a data page
    resampled = lake.partition_file(tmp_path / "lake", "resampled_audio", DAY)
    _flip(resampled, [resampled.stat().st_size - 40])  # the footer
    segments = lake.partition_file(tmp_path / "lake", "emotion_segments", DAY)
    lake.checksum_file(tmp_path / "lake", segments).unlink()  # as if written before checksums were recorded
    segments.write_bytes(segments.read_bytes()[: segments.stat().st_size // 2])  # truncated: no magic bytes
    with pytest.raises(lake.CorruptPartitionError, match="magic bytes"):
        lake.read_partition(tmp_path / "lake", "emotion_segments", DAY)
    for table in ("emotion_scores", "resampled_audio"):
        with pytest.raises(lake.CorruptPartitionError, match=table):
            lake.read_partition(tmp_path / "lake", table, DAY)

    instance = dg.DagsterInstance.ephemeral()
    result = rel.materialize(tmp_path, tiny_model_dir, instance=instance)
    assert result.success, rel.step_failure_messages(result)
    again = _lake(tmp_path, rel)
    assert again.keys() == reference.keys()
    for name in reference:  # recomputed from the FLACs and raw files: the same rows as before
        assert again[name].equals(reference[name]), name

    metadata = _materializations(result)
    for table in ("emotion_scores", "emotion_segments", "resampled_audio"):
        assert metadata[table]["repaired_audio_ids"] == ids, table
        assert str(lake.partition_file(tmp_path / "lake", table, DAY)) in metadata[table]["repaired_partition"]
    for table in ("audio_files", "emotion_embeddings"):  # they were sound
        assert metadata[table]["repaired_audio_ids"] == [] and metadata[table]["repaired_partition"] == "", table
    logged = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("emotion_segments failed its integrity check" in m and "magic bytes" in m for m in logged)
    assert any("emotion_scores: 3 recording(s) recomputed" in m and ids[0] in m for m in logged)

    # the run after the repair reuses everything and repairs nothing
    third = _materializations(rel.materialize(tmp_path, tiny_model_dir))
    assert third["emotion_scores"]["reused_from_previous_run"] == len(ids)
    assert all(third[t]["repaired_audio_ids"] == [] for t in ("audio_files", "resampled_audio", "emotion_scores"))


def test_a_truncated_audio_files_partition_is_rebuilt_from_raw(tmp_path, tiny_model_dir, rel):
    rel.write_small_day(tmp_path / "raw" / DAY)
    assert rel.materialize(tmp_path, tiny_model_dir).success
    landed = lake.partition_file(tmp_path / "lake", "audio_files", DAY)
    ids = sorted(set(lake.read_partition(tmp_path / "lake", "audio_files", DAY).column("audio_id").to_pylist()))
    landed.write_bytes(landed.read_bytes()[:100])

    result = rel.materialize(tmp_path, tiny_model_dir)
    assert result.success, rel.step_failure_messages(result)
    assert _materializations(result)["audio_files"]["repaired_audio_ids"] == ids
    assert lake.read_partition(tmp_path / "lake", "audio_files", DAY).num_rows == 3


def test_a_reused_score_row_that_cannot_be_the_model_s_is_scored_again_and_named(tmp_path, tiny_model_dir, rel):
    rel.write_small_day(tmp_path / "raw" / DAY)
    assert rel.materialize(tmp_path, tiny_model_dir).success
    reference = lake.read_partition(tmp_path / "lake", "emotion_scores", DAY)
    ids = reference.column("audio_id").to_pylist()
    # rows with a valid file checksum and wrong numbers: a sum off by 0.25, a confidence not the top score
    happy, confidence = reference.column("happy").to_pylist(), reference.column("confidence").to_pylist()
    happy[0] += 0.25
    confidence[1] -= 0.01
    bad = reference.set_column(reference.schema.get_field_index("happy"), "happy", pa.array(happy, pa.float32()))
    bad = bad.set_column(bad.schema.get_field_index("confidence"), "confidence", pa.array(confidence, pa.float32()))
    lake.write_partition(tmp_path / "lake", "emotion_scores", DAY, bad)

    # the check names the row whose sum is off; the reuse rule also the one whose confidence is wrong
    evaluation = scores_check_result(lake.read_partition(tmp_path / "lake", "emotion_scores", DAY))
    assert not evaluation.passed
    assert ids[0] in evaluation.description and "re-run the day" in evaluation.description
    assert evaluation.metadata["failing_audio_ids"].value == [ids[0]]
    assert unsound_score_rows(bad) == sorted(ids[:2])

    instance = dg.DagsterInstance.ephemeral()
    result = rel.materialize(tmp_path, tiny_model_dir, instance=instance)
    assert result.success, rel.step_failure_messages(result)
    assert lake.read_partition(tmp_path / "lake", "emotion_scores", DAY).equals(reference)
    metadata = _materializations(result)["emotion_scores"]
    assert metadata["repaired_audio_ids"] == sorted(ids[:2]) and metadata["repaired_partition"] == ""
    assert metadata["reused_from_previous_run"] == 1 and metadata["inferred"] == 2
    logged = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("recomputed from their source" in m and ids[0] in m and ids[1] in m for m in logged)


def test_the_score_check_names_the_failing_rows():
    def row(audio_id: str, scores: list[float]) -> dict:
        return {"audio_id": audio_id, **dict(zip(schemas.EMOTION_LABELS, scores, strict=True))}

    fine = row("fine", [1 / 9] * 9)
    sum_off = row("sum-off", [0.5] + [1 / 9] * 8)
    nan = row("nan", [float("nan")] + [1 / 8] * 8)
    assert scores_off(pa.Table.from_pylist([fine, sum_off, nan])) == ["nan", "sum-off"]

    passing = scores_check_result(pa.Table.from_pylist([fine]))
    assert passing.passed and passing.description is None

    two = scores_check_result(pa.Table.from_pylist([fine, sum_off, nan]))
    assert not two.passed
    assert "2 recording(s)" in two.description and "audio_id nan, sum-off;" in two.description
    assert two.metadata["failing_audio_ids"].value == ["nan", "sum-off"]

    many = scores_check_result(pa.Table.from_pylist([fine, *(row(f"r{i:02d}", [0.0] * 9) for i in range(25))]))
    assert many.metadata["failing_rows"].value == 25
    assert "r19" in many.description and "r20" not in many.description and "and 5 more" in many.description


def test_a_copied_data_directory_points_at_its_own_flacs(tmp_path, tiny_model_dir, rel):
    data = tmp_path / "data"
    rel.write_small_day(data / "raw" / DAY)
    assert rel.materialize(data, tiny_model_dir).success
    copy = tmp_path / "data2"
    shutil.copytree(data, copy, symlinks=True)
    shutil.rmtree(data)  # the original is gone: the copy must stand alone

    paths = lake.read_partition(copy / "lake", "resampled_audio", DAY).column("path").to_pylist()
    assert len(paths) == 3
    for path in paths:
        assert not Path(path).is_absolute() and path.startswith(f"resampled/date={DAY}/"), path
        assert sf.info(str(copy / path)).samplerate == 16000

    result = rel.materialize(copy, tiny_model_dir)
    assert result.success, rel.step_failure_messages(result)
    metadata = _materializations(result)
    assert metadata["emotion_scores"]["reused_from_previous_run"] == 3  # the copy's own results and FLACs
    assert not data.exists()


def test_legacy_absolute_paths_are_made_relative_and_foreign_ones_decoded_again(tmp_path, rel):
    data = tmp_path / "data"
    raw = data / "raw"
    rel.write_small_day(raw / DAY)
    landed = ingest_day(raw, DAY, dt.datetime.now(dt.UTC)).rows
    out_dir = data / "resampled" / f"date={DAY}"
    legacy = resample_day(landed, raw, out_dir, DAY, workers=1).rows  # no data directory: absolute paths
    assert all(Path(p).is_absolute() for p in legacy.column("path").to_pylist())
    written = {p: Path(p).stat().st_mtime_ns for p in legacy.column("path").to_pylist()}

    again = resample_day(landed, raw, out_dir, DAY, previous=legacy, workers=1, data_root=data).rows
    assert again.column("path").to_pylist() == [
        f"resampled/date={DAY}/{a}.flac" for a in again.column("audio_id").to_pylist()
    ]
    assert {p: Path(p).stat().st_mtime_ns for p in written} == written  # reused, not decoded again
    assert resolve_paths(again, data).column("path").to_pylist() == sorted(written)

    # a copy whose rows still name the original's FLACs: decoded again into the copy, not read from there
    copy = tmp_path / "copy"
    shutil.copytree(raw, copy / "raw")
    copied = resample_day(
        landed, copy / "raw", copy / "resampled" / f"date={DAY}", DAY, previous=legacy, workers=1, data_root=copy
    ).rows
    assert copied.column("path").to_pylist() == again.column("path").to_pylist()
    assert all((copy / p).is_file() for p in copied.column("path").to_pylist())


def test_emo_run_says_which_recordings_it_repaired(tmp_path, tiny_model_dir, rel, capsys, monkeypatch):
    from emo_assets.cli import main

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    rel.write_small_day(tmp_path / "raw" / DAY)
    argv = ["run", "--date", DAY, "--data-dir", str(tmp_path), "--model", str(tiny_model_dir), "--device", "cpu"]
    assert main(argv) == 0
    assert "repaired" not in capsys.readouterr().out
    ids = sorted(lake.read_partition(tmp_path / "lake", "emotion_scores", DAY).column("audio_id").to_pylist())
    scores = lake.partition_file(tmp_path / "lake", "emotion_scores", DAY)
    _flip(scores, [scores.stat().st_size // 2])

    assert main(argv) == 0
    summary = capsys.readouterr().out.split(f"Summary for {DAY}")[-1].splitlines()
    assert "  repaired         3  (stored data failed its integrity check: recomputed from its source)" in summary
    assert f"    emotion_scores: {', '.join(ids)}" in summary
    assert not any(line.strip().startswith("resampled_audio:") for line in summary)  # it was sound


def test_a_two_channel_call_repairs_its_unsound_side_only_and_keeps_relative_paths(tmp_path, tiny_model_dir, rel):
    from emo_assets.lib.audio.spoken import spoken_call

    data = tmp_path / "data"
    day_dir = data / "raw" / DAY
    rel.write_small_day(day_dir, n=1)
    sf.write(day_dir / "call.wav", spoken_call(4.0, 16000, 9).T, 16000, subtype="PCM_16")
    (day_dir / "channels.toml").write_text('[channels]\nagent = "left"\ncustomer = "right"\n')
    assert rel.materialize(data, tiny_model_dir).success
    landed = lake.read_partition(data / "lake", "audio_files", DAY).to_pylist()
    call = next(r["audio_id"] for r in landed if r["source_path"].endswith("call.wav"))
    (mono,) = {r["audio_id"] for r in landed} - {call}
    resampled = lake.read_partition(data / "lake", "resampled_audio", DAY).to_pylist()
    assert {(r["audio_id"], r["channel"]): r["path"] for r in resampled} == {
        (call, "agent"): f"resampled/date={DAY}/{call}.agent.flac",
        (call, "customer"): f"resampled/date={DAY}/{call}.customer.flac",
        (mono, "mono"): f"resampled/date={DAY}/{mono}.flac",
    }

    # the customer's score row gets a confidence that is not its top score (the file checksum is valid)
    reference = lake.read_partition(data / "lake", "emotion_scores", DAY)
    units = list(zip(reference.column("audio_id").to_pylist(), reference.column("channel").to_pylist()))
    confidence = reference.column("confidence").to_pylist()
    confidence[units.index((call, "customer"))] -= 0.01
    at = reference.schema.get_field_index("confidence")
    lake.write_partition(
        data / "lake", "emotion_scores", DAY, reference.set_column(at, "confidence", pa.array(confidence, pa.float32()))
    )

    # in a copy of the data directory (the original gone): the copy's own FLACs, only the unsound side rescored
    copy = tmp_path / "copy"
    shutil.copytree(data, copy, symlinks=True)
    shutil.rmtree(data)
    result = rel.materialize(copy, tiny_model_dir)
    assert result.success, rel.step_failure_messages(result)
    metadata = _materializations(result)["emotion_scores"]
    assert metadata["repaired_audio_ids"] == [call] and metadata["repaired_partition"] == ""
    assert metadata["reused_from_previous_run"] == 2 and metadata["inferred"] == 1
    assert lake.read_partition(copy / "lake", "emotion_scores", DAY).equals(reference)
    again = lake.read_partition(copy / "lake", "resampled_audio", DAY).to_pylist()
    assert [r["path"] for r in again] == [r["path"] for r in resampled]


KILLED_BEFORE_THE_RECORD = """
import os, signal, sys
from pathlib import Path
import pyarrow as pa
from emo_assets.lib.store import lake

real = lake.atomic_path

def dying(path):
    if str(path).endswith(".sha256"):  # the new file is in place, its SHA-256 not yet recorded
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path)

lake.atomic_path = dying
lake.write_partition(Path(sys.argv[1]), "t", "2026-11-20", pa.table({"x": [1, 2, 3]}))
print("not killed")
"""


def test_a_writer_killed_between_the_file_and_its_record_leaves_a_readable_day(tmp_path, rel):
    lake.write_partition(tmp_path, "t", DAY, pa.table({"x": [9]}))
    child = rel.python_child(KILLED_BEFORE_THE_RECORD, str(tmp_path))
    out, err = child.communicate(timeout=120)
    assert child.returncode == -9, (out, err)
    path = lake.partition_file(tmp_path, "t", DAY)
    assert not lake.checksum_file(tmp_path, path).exists()  # the old record went before the rename
    assert lake.read_reusable(tmp_path, "t", DAY) == lake.Reused(pa.table({"x": [1, 2, 3]}))  # not "corrupt"
    lake.write_partition(tmp_path, "t", DAY, pa.table({"x": [4]}))  # the day's next run records it again
    assert lake.recorded_sha256(tmp_path, path) == lake.file_sha256(path)
    assert rel.leftover_temp_files(tmp_path) == []
