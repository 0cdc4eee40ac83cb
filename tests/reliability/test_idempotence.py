"""Invariants 1, 2 and 5: every file accounted for; re-runs give the same tables; same inputs, same
model, same seed give the same embeddings, scores, clusters and predictions."""

import shutil

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from emo_assets.lib.audio.sample_day import write_encoded
from emo_assets.lib.audio.spoken import spoken_speech
from emo_assets.lib.store import lake
from emo_assets.lib.store.accounting import account_day

DAY = "2026-11-20"


def test_three_runs_give_identical_tables_and_no_duplicates(tmp_path, tiny_model_dir, rel):
    rel.write_small_day(tmp_path / "raw" / DAY)
    snapshots = []
    for _ in range(3):
        result = rel.materialize(tmp_path, tiny_model_dir)
        assert result.success, rel.failed_steps(result)
        snapshots.append((rel.warehouse_tables(tmp_path), rel.lake_tables(tmp_path)))
        rel.assert_no_duplicates(tmp_path)
    (wh1, lake1), (wh2, lake2), (wh3, lake3) = snapshots
    assert rel.digest(wh1) == rel.digest(wh2) == rel.digest(wh3)
    assert wh1["emotion_scores"] and wh1["emotion_clusters"] and wh1["satisfaction_predictions"]
    assert lake1.keys() == lake2.keys() == lake3.keys()
    for name in lake1:
        assert lake1[name].equals(lake2[name]) and lake1[name].equals(lake3[name]), name
    assert rel.leftover_temp_files(tmp_path) == []


def test_late_file_adds_exactly_it_and_removed_file_removes_its_rows(tmp_path, tiny_model_dir, rel):
    day_dir = tmp_path / "raw" / DAY
    rel.write_small_day(day_dir)
    assert rel.materialize(tmp_path, tiny_model_dir).success
    before = rel.warehouse_tables(tmp_path)

    late = write_encoded(day_dir / "late call.wav", spoken_speech(1.2, 16000, 7), 16000, "wav_pcm_16")
    assert rel.materialize(tmp_path, tiny_model_dir).success
    after = rel.warehouse_tables(tmp_path)
    rel.assert_no_duplicates(tmp_path)
    added = set(after["audio_files"]) - set(before["audio_files"])
    assert [row[1] for row in added] == [f"{DAY}/late call.wav"]
    assert set(before["audio_files"]) <= set(after["audio_files"])  # earlier rows untouched
    late_id = next(iter(added))[0]
    for table in (
        "emotion_scores",
        "emotion_embeddings",
        "resampled_audio",
        "emotion_clusters",
        "satisfaction_predictions",
    ):
        assert len(after[table]) == len(before[table]) + 1, table
        assert sum(1 for row in after[table] if row[0] == late_id) == 1, table
    # the rows of files that were already there did not change
    assert set(before["emotion_scores"]) <= set(after["emotion_scores"])

    late.unlink()
    (day_dir / "notes.wav").unlink()
    assert rel.materialize(tmp_path, tiny_model_dir).success
    removed = rel.warehouse_tables(tmp_path)
    assert removed["emotion_scores"] == before["emotion_scores"]
    assert removed["emotion_clusters"] == before["emotion_clusters"]
    assert removed["satisfaction_predictions"] == before["satisfaction_predictions"]
    assert all(late_id not in row for table in removed.values() for row in table)
    assert removed["quarantine"] == []  # the removed non-audio file is no longer quarantined
    assert not (tmp_path / "resampled" / f"date={DAY}" / f"{late_id}.flac").exists()


def test_same_inputs_same_model_same_results_in_another_directory(tmp_path, tiny_model_dir, rel, reference_day):
    ref_dir, ref_tables, ref_lake = reference_day
    shutil.copytree(ref_dir / "raw", tmp_path / "raw")
    assert rel.materialize(tmp_path, tiny_model_dir).success
    again = rel.warehouse_tables(tmp_path)
    assert rel.portable(again, tmp_path) == rel.portable(ref_tables, ref_dir)
    emb = pq.read_table(lake.partition_file(tmp_path / "lake", "emotion_embeddings", DAY))
    ref_emb = ref_lake[f"emotion_embeddings/date={DAY}/part-0.parquet"]
    assert np.array_equal(lake.embedding_matrix(emb), lake.embedding_matrix(ref_emb))  # bit for bit


def test_accounting_check_fails_loudly_naming_the_missing_file(tmp_path, tiny_model_dir, rel):
    day_dir = tmp_path / "raw" / DAY
    rel.write_small_day(day_dir, n=2)
    assert rel.materialize(tmp_path, tiny_model_dir).success
    # A file lands after the run: nothing processed or quarantined it yet.
    write_encoded(day_dir / "sneaked in.wav", spoken_speech(1.0, 16000, 3), 16000, "wav_pcm_16")
    account = account_day(
        tmp_path / "raw",
        DAY,
        lake.read_partition(tmp_path / "lake", "audio_files", DAY),
        lake.read_partition(tmp_path / "lake", "emotion_scores", DAY),
        lake.read_partition(tmp_path / "lake", "quarantine", DAY),
    )
    assert account.missing == (f"{DAY}/sneaked in.wav",)
    result = rel.materialize(tmp_path, tiny_model_dir, selection=dg.AssetSelection.assets("quarantine"))
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "every_file_accounted_for"]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["missing"].value == [f"{DAY}/sneaked in.wav"]
    # Re-running the day accounts for it again.
    result = rel.materialize(tmp_path, tiny_model_dir)
    assert all(e.passed for e in result.get_asset_check_evaluations())


def _account(raw_root, files, scored, quarantined):
    (raw_root / DAY).mkdir(exist_ok=True)
    for name in ("a.wav", "b.wav", "c.txt"):
        (raw_root / DAY / name).write_bytes(b"x")
    return account_day(
        raw_root,
        DAY,
        pa.table({"source_path": [f"{DAY}/{s}" for s, _ in files], "audio_id": [a for _, a in files]}),
        pa.table({"audio_id": scored}),
        pa.table({"source_path": [f"{DAY}/{s}" for s in quarantined]}),
    )


def test_accounting_counts_rows_not_names(tmp_path):
    """landed = processed + quarantined holds by count: a file counted twice fails the account."""
    ok = _account(tmp_path, [("a.wav", "1"), ("b.wav", "1")], ["1"], ["c.txt"])  # copies share a row
    assert (ok.missing, ok.both, ok.duplicates) == ((), (), ())
    scored_twice = _account(tmp_path, [("a.wav", "1"), ("b.wav", "2")], ["1", "2", "2"], ["c.txt"])
    assert scored_twice.duplicates == (f"{DAY}/b.wav",)
    quarantined_twice = _account(tmp_path, [("a.wav", "1"), ("b.wav", "2")], ["1", "2"], ["c.txt", "c.txt"])
    assert quarantined_twice.duplicates == (f"{DAY}/c.txt",)
    lost = _account(tmp_path, [("a.wav", "1")], ["1"], [])
    assert lost.missing == (f"{DAY}/b.wav", f"{DAY}/c.txt")
