"""`emo erase`: a recording erased from a real day leaves no byte naming it under the data directory
(issue 14, part 1). The scan here is the test's own: raw bytes (as text, as numpy's UTF-32 and as
the binary digest), every Parquet file decoded, every DuckDB file queried, every .npz loaded."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from emo_assets.cli import dagster_instance, main
from emo_assets.lib.analytics import fitted
from emo_assets.lib.audio.load import FlacReader, write_wav_atomic
from emo_assets.lib.files import tombstones
from emo_assets.lib.results.export import export_day
from emo_assets.lib.results.report import write_day_report
from emo_assets.lib.store import lake, warehouse
from tests.helpers import DAY, assert_read_copy_without, failed_steps, materialize, places_naming, write_small_day


@pytest.fixture
def erased_day(tmp_path, tiny_model_dir, monkeypatch):
    """A real day (3 recordings) run on the data directory's own Dagster instance (its run history
    under ``dagster_home/``, as `emo run` and `make ui` keep it), with an export in every format, a
    report and a web output of one recording; then that recording is erased with `emo erase`."""
    data = tmp_path / "data"
    write_small_day(data / "raw" / DAY)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = materialize(data, tiny_model_dir, instance=dagster_instance(data))
    assert result.success, failed_steps(result)
    files = lake.read_partition(data / "lake", "audio_files", DAY).sort_by("source_path")
    victim, kept = files.column("audio_id")[0].as_py(), files.column("audio_id")[1].as_py()
    source = files.column("source_path")[0].as_py()
    for fmt in ("npy", "parquet", "csv"):
        export_day(data / "lake", DAY, data / "exports" / DAY, fmt)
    write_day_report(data / "lake", data / "models", data / "reports", DAY)
    samples = FlacReader(next(data.glob(f"resampled/*/{victim}.flac")))
    web = data / "web_outputs" / "outputs_20261120_120000"
    write_wav_atomic(web / "processed_audio.wav", samples.read(0, samples.num_samples))
    (web / "result.json").write_text(json.dumps({"audio_name": "upload.wav", "emotion": "neutral"}))
    raw_bytes = (data / "raw" / source).read_bytes()
    before = places_naming(data, victim)
    rows_before = {t: lake.read_partition(data / "lake", t, DAY).num_rows for t in ("audio_files", "emotion_scores")}
    args = ["erase", victim, "--data-dir", str(data)]
    monkeypatch.setattr(sys, "argv", ["emo", *args])  # as typed: lock files name their holder's command line
    assert main(args) == 0
    return data, victim, kept, source, raw_bytes, before, rows_before


def test_an_erased_recording_leaves_no_byte_under_the_data_dir(erased_day):
    data, victim, kept, source, _raw, before, rows_before = erased_day
    # the scan finds the id where the platform put it, so finding nothing afterwards means something
    # (the read copy is a catalog of views: its rows are the Parquet files under published/)
    places = ("lake/audio_files", "lake/emotion_embeddings", "warehouse.duckdb", "published/audio_files")
    for place in (*places, "dagster_home/history/runs/"):  # the run history: table previews
        assert any(p.startswith(place) for p in before), (place, before)
    assert any(p.startswith("published/embedding_index") for p in before), before
    assert any(p.startswith("similarity/") for p in before) and any(p.startswith("exports/") for p in before)
    assert places_naming(data, victim, skip=data / "erasure") == []
    name = source.rsplit("/", 1)[1].encode()  # nor the file name it landed under, in the run history
    assert not [p for p in (data / "dagster_home").rglob("*") if p.is_file() and name in p.read_bytes()]
    # the run history still reads: the preview names the recording as erased
    record = dagster_instance(data).fetch_materializations(dg.AssetKey("audio_files"), limit=1).records[0]
    assert "erased" in record.asset_materialization.metadata["preview"].value
    assert not (data / "raw" / source).exists()
    assert not list(data.glob(f"resampled/*/{victim}.flac"))
    assert not (data / "web_outputs" / "outputs_20261120_120000").exists()  # held its 16 kHz audio
    # the other recordings are all still there
    assert places_naming(data, kept) != []
    for table, n in rows_before.items():
        assert lake.read_partition(data / "lake", table, DAY).num_rows == n - 1
    assert len(np.load(data / "exports" / DAY / f"emotion_embeddings_{DAY}.npy")) == rows_before["emotion_scores"] - 1
    # the analysts' copy was published again: it answers, without the recording, from clean files
    assert_read_copy_without(data, victim, kept)
    # the lake day's SHA-256 was rewritten with it: the day reads back, not taken for corrupt
    for table in ("audio_files", "emotion_scores", "emotion_embeddings"):
        lake.verify_partition(data / "lake", lake.partition_file(data / "lake", table, DAY))


def test_the_grace_period_keeps_no_erased_bytes(erased_day):
    """Published lake days are hard links: the lake file rewritten by rename leaves the old bytes
    under published/ until that link goes. Superseded files holding the recording go at once."""
    data, victim, *_ = erased_day
    (entry,) = tombstones.read_log(data)
    assert entry["removed"]["published_files_deleted"] >= 3  # at least audio_files, scores, embeddings
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    try:
        referenced = {r[0] for r in con.execute("SELECT path FROM _publish.files").fetchall()}
        retired = {r[0] for r in con.execute("SELECT path FROM _publish.retired").fetchall()}
    finally:
        con.close()
    on_disk = {str(p.relative_to(data)) for p in (data / "published").rglob("*.parquet")}
    assert referenced <= on_disk and not (retired & referenced)
    assert all(victim not in json.dumps(pq.read_table(data / p).to_pylist(), default=str) for p in on_disk)


def test_the_erasure_log_holds_counts_and_a_keyed_hash_not_the_id(erased_day):
    data, victim, *_ = erased_day
    (entry,) = tombstones.read_log(data)
    text = (data / "erasure" / tombstones.LOG_FILE).read_text()
    assert victim not in text and hashlib.sha256(victim.encode()).hexdigest() not in text
    assert entry["ids_hmac_sha256"] == [tombstones.hashed_id(data, victim)]
    removed = entry["removed"]
    assert removed["raw_files"] == 1 and removed["flac_files"] == 1 and removed["web_outputs"] == 1
    assert removed["run_history_records"] >= 2  # a run's event and the index's copy of it, at least
    assert removed[f"rows:lake/emotion_scores/date={DAY}/part-0.parquet"] == 1
    assert removed["warehouse_rows:embedding_index"] == 1
    assert removed["fitted_models_stale:emotion_cluster_model"] == 1


def test_duckdb_keeps_deleted_rows_in_free_blocks_until_the_file_is_rewritten(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(50)]
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (audio_id VARCHAR, x DOUBLE)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(a, 1.0) for a in ids])
    con.execute("CREATE VIEW v AS SELECT * FROM t")
    con.execute("DELETE FROM t WHERE audio_id = ?", [ids[7]])
    con.execute("VACUUM")
    con.close()
    assert ids[7].encode() in path.read_bytes()  # deleted, vacuumed, checkpointed: still in the file
    assert warehouse.erase_values(path, [ids[8]]) == {"t": 1}
    for erased in (ids[7], ids[8]):
        assert erased.encode() not in path.read_bytes()
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT count(*) FROM v").fetchone()[0] == 48  # views survive the rewrite
    # the change is recorded for the next publish (the caller publishes the analysts' copy)
    assert con.execute("SELECT table_name, day FROM _publish.pending").fetchall() == [("t", None)]
    con.close()


def test_a_rerun_does_not_bring_it_back_even_if_the_bytes_land_again(erased_day, tiny_model_dir):
    data, victim, _kept, source, raw_bytes, *_ = erased_day
    (data / "raw" / source).write_bytes(raw_bytes)  # the same recording lands again (a re-synced backup)
    result = materialize(data, tiny_model_dir)
    assert result.success, failed_steps(result)
    assert not (data / "raw" / source).exists()  # deleted on sight by ingest
    assert places_naming(data, victim, skip=data / "erasure") == []


def test_stale_models_are_refitted_without_the_erased_recording(erased_day, tiny_model_dir):
    data, victim, *_ = erased_day
    model_path = data / "models" / "emotion_cluster_model.pkl"
    assert fitted.is_stale(model_path)
    result = materialize(data, tiny_model_dir)  # the next run: no refit asked for
    assert result.success, failed_steps(result)
    assert not fitted.is_stale(model_path)
    refitted = fitted.load_fitted(model_path, object, "emotion_cluster_model")
    embeddings = lake.read_table(data / "lake", "emotion_embeddings")
    assert victim not in embeddings.column("audio_id").to_pylist()
    assert refitted.model.n_fit == len(set(embeddings.column("audio_id").to_pylist()))


def test_erase_by_source_path_and_refusals(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "lake").mkdir(parents=True)
    assert main(["erase", "not-an-id", "--data-dir", str(data)]) == 2
    assert "not audio_ids" in capsys.readouterr().err
    assert main(["erase", "--path", f"{DAY}/nothing.wav", "--data-dir", str(data)]) == 2
    assert "no recording at" in capsys.readouterr().err
    rows = pa.table({"audio_id": ["a" * 64], "source_path": [f"{DAY}/x.wav"]})
    lake.write_partition(data / "lake", "audio_files", DAY, rows)
    assert main(["erase", "--path", f"{DAY}/x.wav", "--data-dir", str(data)]) == 0
    table = pq.read_table(lake.partition_file(data / "lake", "audio_files", DAY))
    assert table.num_rows == 0 and not pc.any(pc.equal(table.column("audio_id"), "a" * 64)).as_py()
    shutil.rmtree(data)


def test_an_erased_two_channel_call_leaves_neither_side(tmp_path, tiny_model_dir, monkeypatch):
    """Each side of a two-channel call has its own FLAC (<audio_id>.<channel>.flac): both go."""
    import soundfile as sf

    from emo_assets.lib.audio.spoken import spoken_call, spoken_speech

    data = tmp_path / "data"
    day = data / "raw" / DAY
    day.mkdir(parents=True)
    sf.write(day / "call.wav", spoken_call(4.0, 16000, 5).T, 16000, subtype="PCM_16")
    sf.write(day / "other.wav", spoken_speech(4.0, 16000, 9).reshape(-1), 16000)
    (day / "channels.toml").write_text('[channels]\nagent = "left"\ncustomer = "right"\n')
    result = materialize(data, tiny_model_dir)
    assert result.success, failed_steps(result)
    files = {
        f["source_path"]: f["audio_id"] for f in lake.read_partition(data / "lake", "audio_files", DAY).to_pylist()
    }
    victim, kept = files[f"{DAY}/call.wav"], files[f"{DAY}/other.wav"]
    assert sorted(p.name for p in data.glob(f"resampled/*/{victim}.*")) == [
        f"{victim}.agent.flac",
        f"{victim}.customer.flac",
    ]
    args = ["erase", victim, "--data-dir", str(data)]
    monkeypatch.setattr(sys, "argv", ["emo", *args])
    assert main(args) == 0
    assert list(data.glob(f"resampled/*/{victim}*")) == []
    assert list(data.glob(f"resampled/*/{kept}.flac")) != []
    assert places_naming(data, victim, skip=data / "erasure") == []
    (entry,) = tombstones.read_log(data)
    assert entry["removed"]["flac_files"] == 2


def test_a_run_history_that_cannot_be_rewritten_stops_the_erasure_before_any_file(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    """Another process holds the run history's index mid-write: `emo erase` stops with exit 1 before
    it touches a file, saying where it stopped; run again once the history is free, it finishes."""
    import sqlite3

    data = tmp_path / "data"
    write_small_day(data / "raw" / DAY, n=2)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert materialize(data, tiny_model_dir, instance=dagster_instance(data)).success
    files = lake.read_partition(data / "lake", "audio_files", DAY).sort_by("source_path")
    victim, source = files.column("audio_id")[0].as_py(), files.column("source_path")[0].as_py()
    args = ["erase", victim, "--data-dir", str(data)]
    monkeypatch.setattr(sys, "argv", ["emo", *args])
    holder = sqlite3.connect(data / "dagster_home" / "history" / "runs" / "index.db", timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # a writer in the middle of its transaction
    try:
        assert main(args) == 1
    finally:
        holder.rollback()
        holder.close()
    said = capsys.readouterr().err
    assert "stopped at Dagster's run history, before any file" in said and "database is locked" in said, said
    assert (data / "raw" / source).exists()
    assert victim in lake.read_partition(data / "lake", "audio_files", DAY).column("audio_id").to_pylist()
    assert main(args) == 0
    assert places_naming(data, victim, skip=data / "erasure") == []
