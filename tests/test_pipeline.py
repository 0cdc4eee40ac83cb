"""The whole graph materialized on real files with the tiny random model, then read back."""

import datetime as dt
import json
import os
import time

import dagster as dg
import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from emo_assets.assets import all_assets
from emo_assets.definitions import build_definitions
from emo_assets.lib import schemas
from emo_assets.lib.audio.sample_day import (
    BROKEN_SAMPLE,
    NO_SPEECH_SAMPLE,
    SPOKEN,
    write_encoded,
    write_sample_day,
)
from emo_assets.lib.store import lake, warehouse
from emo_assets.resources import EmotionModelResource, RayResource, StorageResource
from tests.helpers import materialize, resources, schedule_tick

DAY = "2026-11-20"
# Rows of the emotion tables: one per side of a two-channel call (calls/channels.toml), one per mono
# recording; the copy of interview_0001 shares its audio_id. Recordings: one row each in the analytics.
N_VOICES = sum(2 if rec.speech == "call" else 1 for rec in SPOKEN)
N_RECORDINGS = len(SPOKEN)


@pytest.fixture(scope="module")
def pipeline_day(tmp_path_factory, tiny_model_dir):
    """A sample day plus edge cases, materialized once for the module's tests."""
    data_dir = tmp_path_factory.mktemp("data")
    day_dir = data_dir / "raw" / DAY
    write_sample_day(day_dir, seed=0)
    rng = np.random.default_rng(1)
    # a 10 ms clip: decodes, but is shorter than the model's 25 ms minimum
    write_encoded(
        day_dir / "edge/too_short.wav", rng.standard_normal(160).astype(np.float32) * 0.1, 16000, "wav_pcm_16"
    )
    # digital silence: resampled and flagged is_silent, then quarantined for holding no speech
    write_encoded(day_dir / "edge/silence.wav", np.zeros(32000, np.float32), 16000, "wav_pcm_16")
    # the same bytes under two names: two audio_files rows, one audio_id
    (day_dir / "edge/copy of interview 1.flac").write_bytes((day_dir / "interviews/interview_0001.flac").read_bytes())
    (day_dir / "edge/notes.txt").write_text("not audio")
    (day_dir / "edge/empty.wav").write_bytes(b"")
    result = materialize(data_dir, tiny_model_dir)
    assert result.success
    return data_dir, result


def test_lake_tables_have_their_schemas(pipeline_day):
    data_dir, _ = pipeline_day
    lake_dir = data_dir / "lake"
    for table, schema in [
        ("audio_files", schemas.AUDIO_FILES),
        ("resampled_audio", schemas.RESAMPLED_AUDIO),
        ("emotion_scores", schemas.EMOTION_SCORES),
        ("quarantine", schemas.QUARANTINE),
    ]:
        written = pq.read_schema(lake.partition_file(lake_dir, table, DAY))
        assert written.names == schema.names, table
        assert [f.type for f in written] == [f.type for f in schema], table
    emb = pq.read_table(lake.partition_file(lake_dir, "emotion_embeddings", DAY))
    assert emb.schema.field("embedding").type.list_size > 0


def test_every_file_is_processed_or_quarantined(pipeline_day):
    data_dir, _ = pipeline_day
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    files = con.execute("SELECT source_path, audio_id FROM audio_files ORDER BY source_path").fetchall()
    scored = {a for (a,) in con.execute("SELECT audio_id FROM emotion_scores").fetchall()}
    quarantined = dict(con.execute("SELECT source_path, reason FROM quarantine").fetchall())
    con.close()
    good = [r.name for r in SPOKEN] + ["edge/copy of interview 1.flac"]
    processed = {src.removeprefix(f"{DAY}/") for src, audio_id in files if audio_id in scored}
    assert processed == set(good)
    assert {k.removeprefix(f"{DAY}/") for k in quarantined} == {
        BROKEN_SAMPLE,
        NO_SPEECH_SAMPLE,
        "edge/silence.wav",
        "edge/too_short.wav",
        "edge/notes.txt",
        "edge/empty.wav",
    }
    assert quarantined[f"{DAY}/{NO_SPEECH_SAMPLE}"] == quarantined[f"{DAY}/edge/silence.wav"] == schemas.NO_SPEECH
    assert "too short" in quarantined[f"{DAY}/edge/too_short.wav"]
    assert "empty" in quarantined[f"{DAY}/edge/empty.wav"]


def test_scores_embeddings_and_identical_copies(pipeline_day, tiny_model_dir):
    data_dir, _ = pipeline_day
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    labels = ", ".join(schemas.EMOTION_LABELS)
    rows = con.execute(f"SELECT audio_id, model_id, emotion, confidence, {labels} FROM emotion_scores").fetchall()
    width = con.execute("SELECT DISTINCT len(embedding) FROM emotion_embeddings").fetchall()
    emb_type = con.execute("SELECT typeof(embedding) FROM emotion_embeddings LIMIT 1").fetchone()[0]
    copies = con.execute(
        "SELECT count(*), count(DISTINCT audio_id) FROM audio_files "
        "WHERE source_path LIKE '%interview_0001.flac' OR source_path LIKE '%copy of interview 1.flac'"
    ).fetchone()
    sides = con.execute(
        "SELECT f.source_path, s.channel FROM emotion_scores s JOIN audio_files f USING (audio_id, date) "
        "WHERE f.source_path LIKE '%/calls/%' ORDER BY ALL"
    ).fetchall()
    silent = con.execute("SELECT count(*) FROM resampled_audio WHERE is_silent").fetchone()[0]
    con.close()
    assert len(rows) == N_VOICES  # the copy shares its audio_id with interview_0001
    # the calls folder's channels.toml splits its two-voice stereo calls; its mono phone call stays mono
    assert sides == sorted(
        (f"{DAY}/{rec.name}", channel)
        for rec in SPOKEN
        if rec.name.startswith("calls/")
        for channel in (("agent", "customer") if rec.speech == "call" else ("mono",))
    )
    for _audio_id, model_id, emotion, confidence, *scores in rows:
        assert model_id == "random-tiny-seed0"
        assert abs(sum(scores) - 1) < 1e-5
        assert emotion == schemas.EMOTION_LABELS[int(np.argmax(scores))]
        assert confidence == pytest.approx(max(scores))
    assert len(width) == 1 and emb_type == f"FLOAT[{width[0][0]}]"
    assert copies == (2, 1)
    assert silent == 1


def test_analytics_tables_and_sql_models(pipeline_day):
    data_dir, _ = pipeline_day
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    clusters = con.execute("SELECT count(*), count(DISTINCT audio_id) FROM emotion_clusters").fetchone()
    sources = con.execute("SELECT DISTINCT source FROM satisfaction_predictions").fetchall()
    summary = con.execute("SELECT * FROM daily_emotion_summary").fetchall()
    summary_cols = [d[0] for d in con.description]
    profiles = con.execute("SELECT count(*) FROM cluster_profiles").fetchone()[0]
    index = con.execute("SELECT count(*), count(DISTINCT audio_id) FROM embedding_index").fetchone()
    some_id = con.execute("SELECT min(audio_id) FROM emotion_scores").fetchone()[0]
    neighbours = con.execute("SELECT audio_id, similarity FROM similar_audio(?, 3)", [some_id]).fetchall()
    con.close()
    # the similarity index holds the day's embeddings; the macro searches it
    assert index == (N_RECORDINGS, N_RECORDINGS)  # one row per recording: a call by its customer
    assert len(neighbours) == 3 and some_id not in {a for a, _ in neighbours}
    assert [s for _, s in neighbours] == sorted((s for _, s in neighbours), reverse=True)
    assert clusters == (N_RECORDINGS, N_RECORDINGS)
    assert sources == [("rule:emotion_valence",)]  # no labels: the documented rule
    assert len(summary) == 1
    row = dict(zip(summary_cols, summary[0]))
    assert str(row["date"]) == DAY
    assert sum(row[f"share_{e}"] for e in schemas.EMOTION_LABELS) == pytest.approx(1.0)
    assert profiles >= 1


def test_asset_checks_pass(pipeline_day):
    _, result = pipeline_day
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == {
        "scores_sum_to_one",
        "embeddings_match_model",
        "every_file_accounted_for",
    }
    assert all(e.passed for e in evaluations)


def test_lineage_includes_sql_models():
    defs = build_definitions(resources("/nonexistent", "/nonexistent"))
    graph = defs.resolve_asset_graph()
    parents = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys} for k in graph.get_all_asset_keys()
    }
    assert parents["resampled_audio"] == {"audio_files"}
    assert parents["emotion_scores"] == {"resampled_audio"}
    assert parents["emotion_clusters"] == {"emotion_cluster_model", "emotion_embeddings"}
    assert {"emotion_scores", "audio_files"} <= parents["daily_emotion_summary"]
    assert "emotion_clusters" in parents["cluster_profiles"]


def test_rerun_reuses_scores_and_is_identical(pipeline_day, tiny_model_dir):
    data_dir, _ = pipeline_day
    before = pq.read_table(lake.partition_file(data_dir / "lake", "emotion_scores", DAY))
    result = materialize(data_dir, tiny_model_dir)
    after = pq.read_table(lake.partition_file(data_dir / "lake", "emotion_scores", DAY))
    assert after.equals(before)
    meta = result.asset_materializations_for_node("emotion_tables")[0].metadata
    assert meta["inferred"].value == 0
    assert meta["reused_from_previous_run"].value == N_VOICES


def test_partitions_schedule_and_sensor(tmp_path, tiny_model_dir):
    (tmp_path / "raw" / DAY).mkdir(parents=True)
    write_encoded(tmp_path / "raw" / DAY / "a.wav", np.zeros(16000, np.float32), 16000, "wav_pcm_16")
    defs = build_definitions(resources(tmp_path, tiny_model_dir))
    when = dt.datetime(2026, 11, 21, 0, 30, tzinfo=dt.UTC)
    request = schedule_tick(defs, resources(tmp_path, tiny_model_dir), when)[0]
    assert request.partition_key == "2026-11-20"

    sensor = defs.get_sensor_def("raw_files_sensor")
    old = time.time() - 3600
    os.utime(tmp_path / "raw" / DAY / "a.wav", (old, old))
    with dg.build_sensor_context(resources=resources(tmp_path, tiny_model_dir), definitions=defs) as context:
        first = sensor.evaluate_tick(context)
    assert [r.partition_key for r in first.run_requests] == [DAY]
    with dg.build_sensor_context(
        cursor=first.cursor, resources=resources(tmp_path, tiny_model_dir), definitions=defs
    ) as context:
        assert sensor.evaluate_tick(context).run_requests == []
    # a late file changes the day: one new request for that day
    write_encoded(tmp_path / "raw" / DAY / "late.wav", np.zeros(16000, np.float32), 16000, "wav_pcm_16")
    os.utime(tmp_path / "raw" / DAY / "late.wav", (old, old))
    with dg.build_sensor_context(
        cursor=first.cursor, resources=resources(tmp_path, tiny_model_dir), definitions=defs
    ) as context:
        late = sensor.evaluate_tick(context)
    assert [r.partition_key for r in late.run_requests] == [DAY]
    assert json.loads(late.cursor)[DAY] != json.loads(first.cursor)[DAY]


def test_segments_for_every_recording_and_opt_in_frames(tmp_path, tiny_model_dir):
    from emo_assets.lib.audio.sample_day import synth_speech

    day_dir = tmp_path / "raw" / DAY
    write_encoded(day_dir / "long_call.wav", synth_speech(70.0, 16000, 3), 16000, "wav_pcm_16")
    write_encoded(day_dir / "short_call.wav", synth_speech(3.0, 16000, 4), 16000, "wav_pcm_16")
    resources = {
        "storage": StorageResource(data_dir=str(tmp_path)),
        "emotion_model": EmotionModelResource(
            model=str(tiny_model_dir), device="cpu", window_s=30.0, frame_granularity=True, segments="windows"
        ),
        "ray": RayResource(),
    }
    assert dg.materialize(list(all_assets()), partition_key=DAY, resources=resources).success
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    labels = ", ".join(schemas.EMOTION_LABELS)
    segments = con.execute(
        f"SELECT f.source_path, s.start_s, s.end_s, {labels} FROM emotion_segments s "
        "JOIN audio_files f USING (audio_id, date) ORDER BY f.source_path, s.start_s"
    ).fetchall()
    scores = dict(
        (row[0], np.array(row[1:]))
        for row in con.execute(
            f"SELECT f.source_path, {labels} FROM emotion_scores s JOIN audio_files f USING (audio_id, date)"
        ).fetchall()
    )
    frames = dict(
        con.execute(
            "SELECT f.source_path, count(*) FROM emotion_frames r JOIN audio_files f USING (audio_id, date) GROUP BY 1"
        ).fetchall()
    )
    con.close()
    long_rows = [r for r in segments if r[0].endswith("long_call.wav")]
    short_rows = [r for r in segments if r[0].endswith("short_call.wav")]
    # 70 s in 30 s windows: several windows covering the whole call; 3 s: one window
    assert len(long_rows) >= 3 and long_rows[0][1] == 0.0 and long_rows[-1][2] == pytest.approx(70.0)
    assert [(r[1], r[2]) for r in short_rows] == [(0.0, pytest.approx(3.0))]
    np.testing.assert_allclose(short_rows[0][3:], scores[f"{DAY}/short_call.wav"], atol=1e-6)
    # the recording's scores are the duration-weighted mean of its windows
    weights = np.array([r[2] - r[1] for r in long_rows])
    window_scores = np.array([r[3:] for r in long_rows])
    np.testing.assert_allclose(weights @ window_scores / weights.sum(), scores[f"{DAY}/long_call.wav"], atol=1e-5)
    # frames at 50 Hz
    assert frames[f"{DAY}/long_call.wav"] == pytest.approx(70 * 50, abs=2)
    assert frames[f"{DAY}/short_call.wav"] == pytest.approx(3 * 50, abs=2)


def _sql_model_names() -> set[str]:
    return {
        k.to_user_string() for a in all_assets() for k, group in a.group_names_by_key.items() if group == "sql_models"
    }


@pytest.mark.parametrize("file_name", ["warehouse.duckdb", "warehouse_read.duckdb"])
def test_every_table_view_column_and_macro_has_a_comment(pipeline_day, file_name):
    data_dir, _ = pipeline_day
    ours = set(schemas.TABLES) | _sql_model_names()
    if file_name == "warehouse_read.duckdb":
        con = warehouse.open_read_copy(data_dir)
    else:
        con = duckdb.connect(str(data_dir / file_name), read_only=True)
    try:
        relations = dict(
            con.execute(
                "SELECT table_name, comment FROM duckdb_tables() UNION ALL "
                "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        )
        columns = con.execute("SELECT table_name, column_name, comment FROM duckdb_columns()").fetchall()
        macros = dict(
            con.execute(
                "SELECT function_name, comment FROM duckdb_functions() WHERE function_type = 'table_macro' AND NOT internal"
            ).fetchall()
        )
    finally:
        con.close()
    present = ours & set(relations)
    # every table the day makes is there (emotion_frames is opt-in and off here)
    assert present == ours - {"emotion_frames"}
    assert {name for name in present if not relations[name]} == set()
    missing = [(t, c) for t, c, comment in columns if t in ours and not comment]
    assert missing == []
    assert len([c for c in columns if c[0] in ours]) > 100
    assert set(macros) >= set(schemas.MACROS)
    assert {name: macros[name] for name in schemas.MACROS} == schemas.MACROS
    by_column = {(t, c): comment for t, c, comment in columns}
    assert by_column[("emotion_scores", "confidence")] == "score of the top class, 0..1"
    assert (
        by_column[("satisfaction_predictions", "probability")]
        == schemas.TABLES["satisfaction_predictions"].columns["probability"]
    )
    # a column carried through unchanged keeps its source's comment; a computed one says how
    assert by_column[("daily_emotion_summary", "date")].startswith(schemas.TABLES["audio_files"].columns["date"])
    assert by_column[("daily_emotion_summary", "mean_confidence")] == (
        "computed in daily_emotion_summary.sql: AVG(scored.confidence) (from emotion_scores.confidence)"
    )
    assert relations["daily_emotion_summary"].startswith("One row per day and embedding model")


def test_table_assets_publish_their_column_schema(pipeline_day):
    _, result = pipeline_day
    specs = {key.to_user_string(): spec for a in all_assets() for key, spec in a.specs_by_key.items()}
    for name, table in schemas.TABLES.items():
        schema = specs[name].metadata["dagster/column_schema"]
        assert isinstance(schema, dg.TableSchema)
        assert [c.name for c in schema.columns] == table.arrow_schema(4).names
        assert all(c.description == table.columns[c.name] for c in schema.columns)
        assert specs[name].description
    emotion = [
        specs[t].description for t in ("emotion_embeddings", "emotion_scores", "emotion_segments", "emotion_frames")
    ]
    assert len(set(emotion)) == 4
    # SQL models: column lineage from sqlglot at definition, the built table's columns on materialization
    lineage = specs["daily_emotion_summary"].metadata["dagster/column_lineage"]
    assert lineage.deps_by_column["mean_confidence"] == [
        dg.TableColumnDep(asset_key=dg.AssetKey("emotion_scores"), column_name="confidence")
    ]
    assert lineage.deps_by_column["files"] == []
    built = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() in _sql_model_names()
    }
    assert set(built) == _sql_model_names()
    for name, metadata in built.items():
        columns = metadata["dagster/column_schema"].schema.columns
        assert columns and all(c.description for c in columns), name
