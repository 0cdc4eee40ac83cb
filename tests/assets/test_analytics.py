"""Cluster and satisfaction models fitted on a real materialized day."""

import csv

import dagster as dg
import duckdb

from emo_assets.assets import all_assets
from emo_assets.lib.audio.sample_day import synth_speech, write_encoded
from emo_assets.resources import EmotionModelResource, StorageResource

DAY = "2026-11-21"
N_CLIPS = 24


def test_labels_train_a_satisfaction_model_and_predictions_say_so(tmp_path, tiny_model_dir):
    day_dir = tmp_path / "raw" / DAY
    for i in range(N_CLIPS):
        write_encoded(day_dir / f"call_{i:02d}.wav", synth_speech(0.6 + 0.05 * i, 16000, i), 16000, "wav_pcm_16")
    (tmp_path / "labels").mkdir()
    with open(tmp_path / "labels" / "survey.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source_path", "label"])
        for i in range(N_CLIPS):
            writer.writerow([f"{DAY}/call_{i:02d}.wav", "satisfied" if i % 2 else "dissatisfied"])
    result = dg.materialize(
        list(all_assets()),
        partition_key=DAY,
        resources={
            "storage": StorageResource(data_dir=str(tmp_path)),
            "emotion_model": EmotionModelResource(model=str(tiny_model_dir), device="cpu"),
        },
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
