"""Cluster and satisfaction models fitted on real materialized days: versioned, fitted once per
backfill, refitted only on request, on distinct recordings."""

import csv
import threading
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import duckdb

from emo_assets import cli
from emo_assets.assets import all_assets
from emo_assets.definitions import build_definitions
from emo_assets.lib.analytics.clustering import load_fitted_cluster_model
from emo_assets.lib.audio.sample_day import write_encoded
from emo_assets.lib.audio.spoken import spoken_speech
from emo_assets.lib.store import warehouse
from emo_assets.resources import EmotionModelResource, RayResource, StorageResource
from tests.helpers import publish_run, resources

DAY = "2026-11-21"
N_CLIPS = 24


def test_labels_train_a_satisfaction_model_and_predictions_say_so(tmp_path, tiny_model_dir):
    day_dir = tmp_path / "raw" / DAY
    for i in range(N_CLIPS):
        write_encoded(day_dir / f"call_{i:02d}.wav", spoken_speech(1.2 + 0.05 * i, 16000, i), 16000, "wav_pcm_16")
    (tmp_path / "labels").mkdir()
    with open(tmp_path / "labels" / "survey.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source_path", "label"])
        for i in range(N_CLIPS):
            writer.writerow([f"{DAY}/call_{i:02d}.wav", "satisfied" if i % 2 else "dissatisfied"])
    result = dg.materialize(
        list(all_assets()),
        partition_key=DAY,
        resources=resources(tmp_path, tiny_model_dir),
    )
    assert result.success
    meta = result.asset_materializations_for_node("satisfaction_model")[0].metadata
    assert meta["fitted"].value is True
    assert meta["n_labels"].value == N_CLIPS
    assert 0.0 <= meta["cv_accuracy"].value <= 1.0 and 0.0 <= meta["cv_macro_f1"].value <= 1.0
    cluster_meta = result.asset_materializations_for_node("emotion_cluster_model")[0].metadata
    assert 2 <= cluster_meta["k"].value <= 8

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    predictions = con.execute("SELECT label, probability, source FROM satisfaction_predictions").fetchall()
    clusters = con.execute("SELECT count(DISTINCT cluster_id), count(*) FROM emotion_clusters").fetchone()
    con.close()
    assert len(predictions) == N_CLIPS
    assert {source for _, _, source in predictions} == {"model"}
    assert {label for label, _, _ in predictions} <= {"satisfied", "dissatisfied"}
    assert all(0.5 <= p <= 1.0 for _, p, _ in predictions)
    assert clusters == (cluster_meta["k"].value, N_CLIPS)


# --- one model version across a backfill; duplicates do not inflate the fits -------------------

BACKFILL_DAYS = ("2026-11-28", "2026-11-29", "2026-11-30")
N_SAME = 21  # distinct recordings, the same bytes landed on every backfill day


def _resources(data_dir, model_dir) -> dict:
    return {
        "storage": StorageResource(data_dir=str(data_dir)),
        "emotion_model": EmotionModelResource(model=str(model_dir), device="cpu"),
        "ray": RayResource(),
    }


def _write_day(data_dir, day: str, n: int, offset: int = 0, prefix: str = "call") -> None:
    for i in range(n):
        samples = spoken_speech(1.2 + 0.05 * ((i + offset) % 20), 16000, i + offset)
        write_encoded(data_dir / "raw" / day / f"{prefix}_{i:02d}.wav", samples, 16000, "wav_pcm_16")


def _versions(data_dir) -> dict[str, list[tuple]]:
    con = warehouse.open_read_copy(data_dir)
    try:
        tables = {
            table: con.execute(
                f"SELECT model_version, count(*), count(DISTINCT date) FROM {table} GROUP BY 1 ORDER BY 1"
            ).fetchall()
            for table in ("emotion_clusters", "satisfaction_predictions")
        }
        profiles = "SELECT model_version, sum(recordings) FROM cluster_profiles GROUP BY 1 ORDER BY 1"
        tables["cluster_profiles"] = con.execute(profiles).fetchall()
        return tables
    finally:
        con.close()


def test_parallel_backfill_of_three_days_assigns_one_model_version(tmp_path, tiny_model_dir):
    """A UI "Materialize all" over three days: the three day runs at once (threads, each its own run of
    every asset, model assets included), on the same recordings landed on every day plus two of
    the day's own: one fit of each model, one model_version in every table, fits counted in
    distinct recordings."""
    for d, day in enumerate(BACKFILL_DAYS):
        _write_day(tmp_path, day, N_SAME)
        _write_day(tmp_path, day, 2, offset=100 + 10 * d, prefix="own")
    (tmp_path / "labels").mkdir()
    with open(tmp_path / "labels" / "survey.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source_path", "label"])
        for day in BACKFILL_DAYS:  # 3 label rows per recording, one per day it landed on
            for i in range(N_SAME):
                writer.writerow([f"{day}/call_{i:02d}.wav", "satisfied" if i % 2 else "dissatisfied"])
    barrier = threading.Barrier(len(BACKFILL_DAYS))

    def run_day(day: str):
        barrier.wait()
        return dg.materialize(list(all_assets()), partition_key=day, resources=_resources(tmp_path, tiny_model_dir))

    with ThreadPoolExecutor(len(BACKFILL_DAYS)) as pool:
        results = list(pool.map(run_day, BACKFILL_DAYS))
    assert all(r.success for r in results)
    publish_run(tmp_path)  # each run's end (the run-status sensors), serialised on the writer lock

    def model_meta(asset: str) -> list[dict]:
        return [r.asset_materializations_for_node(asset)[0].metadata for r in results]

    for asset in ("emotion_cluster_model", "satisfaction_model"):
        metas = model_meta(asset)
        assert sum(m["refitted"].value for m in metas) == 1, asset  # one run fitted, two kept its version
        assert len({m["model_version"].value for m in metas}) == 1, asset
    (cluster,) = [m for m in model_meta("emotion_cluster_model") if m["refitted"].value]
    # the days embedded when the one fit ran: the shared recordings once, plus each day's own two
    embedded_days = cluster["n_embedding_rows"].value // (N_SAME + 2)
    assert cluster["n_embedding_rows"].value == embedded_days * (N_SAME + 2) and 1 <= embedded_days <= 3
    assert cluster["n_recordings"].value == N_SAME + 2 * embedded_days == cluster["n_fit"].value
    (satisfaction,) = [m for m in model_meta("satisfaction_model") if m["refitted"].value]
    assert satisfaction["n_recordings"].value == N_SAME and satisfaction["n_labels"].value == N_SAME
    assert satisfaction["n_label_rows"].value == 3 * N_SAME
    assert satisfaction["n_label_conflicts"].value == 0

    version = cluster["model_version"].value
    tables = _versions(tmp_path)
    assert tables["emotion_clusters"] == [(version, 3 * (N_SAME + 2), 3)]
    assert [v for v, *_ in tables["satisfaction_predictions"]] == [satisfaction["model_version"].value]
    assert tables["cluster_profiles"] == [(version, 3 * (N_SAME + 2))]
    for day_result in results:  # each day run says which version it assigned with
        assert (
            day_result.asset_materializations_for_node("emotion_clusters")[0].metadata["model_version"].value == version
        )


def test_refit_is_explicit_and_reassigns_every_day(tmp_path, tiny_model_dir, monkeypatch):
    """A day run keeps the fitted models even when the model assets are selected; models_job, and
    `emo run --refit-models`, refit on every day's recordings and re-assign every day in the
    warehouse to the new version."""
    first, second = "2026-11-20", "2026-11-21"
    _write_day(tmp_path, first, 4)
    _write_day(tmp_path, second, 4, offset=7)
    resources = _resources(tmp_path, tiny_model_dir)
    run1 = dg.materialize(list(all_assets()), partition_key=first, resources=resources)
    run2 = dg.materialize(list(all_assets()), partition_key=second, resources=resources)
    assert run1.success and run2.success
    publish_run(tmp_path)
    v1 = run1.asset_materializations_for_node("emotion_cluster_model")[0].metadata
    kept = run2.asset_materializations_for_node("emotion_cluster_model")[0].metadata
    assert v1["refitted"].value is True and v1["n_recordings"].value == 4
    assert kept["refitted"].value is False and kept["model_version"].value == v1["model_version"].value
    assert [(v, n) for v, n, _ in _versions(tmp_path)["emotion_clusters"]] == [(v1["model_version"].value, 8)]

    job = build_definitions(resources).resolve_job_def("models_job")
    refit = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert refit.success
    publish_run(tmp_path)
    v2 = refit.asset_materializations_for_node("emotion_cluster_model")[0].metadata
    assert v2["refitted"].value is True and v2["n_recordings"].value == 8
    assert v2["model_version"].value != v1["model_version"].value
    assert v2["emotion_clusters_days_reassigned"].value == 2
    sat = refit.asset_materializations_for_node("satisfaction_model")[0].metadata
    assert sat["satisfaction_predictions_days_reassigned"].value == 2
    # no labels: a new version of the rule, and the metadata does not claim a model was fitted
    assert (sat["fitted"].value, sat["refitted"].value) == (False, False)
    tables = _versions(tmp_path)
    assert tables["emotion_clusters"] == [(v2["model_version"].value, 8, 2)]
    assert tables["satisfaction_predictions"] == [(sat["model_version"].value, 8, 2)]
    # the fitted file holds the version
    path = tmp_path / "models" / "emotion_cluster_model.pkl"
    assert load_fitted_cluster_model(path).model_version == v2["model_version"].value

    # a third day through the command line, with a refit: all three days move to the new version
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    third = "2026-11-22"
    _write_day(tmp_path, third, 3, offset=40)
    assert (
        cli.main(
            ["run", "--date", third, "--data-dir", str(tmp_path), "--model", str(tiny_model_dir), "--device", "cpu"]
        )
        == 0
    )
    assert load_fitted_cluster_model(path).model_version == v2["model_version"].value  # kept by a day run
    assert cli.run_day(third, refit_models=True, data_dir=str(tmp_path), model=str(tiny_model_dir), device="cpu") == 0
    v3 = load_fitted_cluster_model(path)
    assert v3.model_version != v2["model_version"].value and v3.stats["n_recordings"] == 11
    tables = _versions(tmp_path)
    assert tables["emotion_clusters"] == [(v3.model_version, 11, 3)]
    assert tables["cluster_profiles"] == [(v3.model_version, 11)]  # the day run rebuilt the SQL models
    assert [(n, days) for _, n, days in tables["satisfaction_predictions"]] == [(11, 3)]
