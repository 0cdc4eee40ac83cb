"""Charts on the assets, `emo report` and `emo export`, on a small day materialized for real."""

from __future__ import annotations

import base64
import csv
import datetime as dt

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emo_assets.assets import all_assets
from emo_assets.cli import main
from emo_assets.lib import schemas
from emo_assets.lib.audio.sample_day import write_encoded
from emo_assets.lib.audio.spoken import spoken_speech
from emo_assets.lib.results import plots
from emo_assets.lib.store import lake
from tests.helpers import resources

DAY = "2026-11-21"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def day(tmp_path_factory, tiny_model_dir):
    """Six short recordings of speech through the whole graph (tiny random model)."""
    data_dir = tmp_path_factory.mktemp("report_data")
    for i in range(6):
        wav = (0.5 + 0.3 * i) * spoken_speech(1.0 + 0.25 * i, 16000, [11, i])
        write_encoded(data_dir / "raw" / DAY / f"rec_{i}.wav", wav, 16000, "wav_pcm_16")
    result = dg.materialize(
        list(all_assets()),
        partition_key=DAY,
        resources=resources(data_dir, tiny_model_dir),
    )
    assert result.success
    return data_dir, result


def _metadata(result, key: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    return event.materialization.metadata


def _embedded_png(markdown: str) -> bytes:
    prefix = "](data:image/png;base64,"
    assert markdown.startswith("![") and prefix in markdown and markdown.endswith(")")
    return base64.b64decode(markdown[markdown.index(prefix) + len(prefix) : -1])


def test_assets_attach_charts_and_write_pngs(day):
    data_dir, result = day
    scores_md = _metadata(result, "emotion_scores")
    png = _embedded_png(scores_md["distribution_chart"].value)
    assert png.startswith(PNG_MAGIC)
    assert (data_dir / "reports" / DAY / "emotion_distribution.png").read_bytes() == png
    assert sum(scores_md["emotion_distribution"].value.values()) == 6

    cluster_md = _metadata(result, "emotion_cluster_model")
    png = _embedded_png(cluster_md["pca_scatter"].value)
    assert png.startswith(PNG_MAGIC)
    assert (data_dir / "reports" / "emotion_cluster_model_pca.png").read_bytes() == png


def test_report_has_distribution_clusters_and_timeline(day, capsys):
    data_dir, _ = day
    # a long recording's segments (the table is optional: written here by hand)
    scores = np.full((3, 9), 0.02, np.float32)
    for row, label in enumerate((0, 3, 6)):
        scores[row, label] = 0.84
    segments = pa.Table.from_pylist(
        [
            {
                "audio_id": "long_call",
                "date": dt.date.fromisoformat(DAY),
                "model_id": "random-tiny-seed0",
                "start_s": 30.0 * i,
                "end_s": 30.0 * (i + 1),
                "emotion": schemas.EMOTION_LABELS[label],
                "confidence": 0.84,
                **{k: float(v) for k, v in zip(schemas.EMOTION_LABELS, scores[i])},
            }
            for i, label in enumerate((0, 3, 6))
        ],
        schema=schemas.EMOTION_SEGMENTS,
    )
    # a call whose top emotions and negativity disagree: a surprised turn that is mostly negative
    # (angry + sad = 0.55), a neutral-topped turn that is not mostly calm, then a happy one
    mixed = [
        {"surprised": 0.45, "angry": 0.3, "sad": 0.25},
        {"neutral": 0.4, "happy": 0.05, "sad": 0.3, "other": 0.25},
        {"happy": 0.8, "other": 0.2},
    ]
    segments = pa.concat_tables(
        [
            segments,
            pa.Table.from_pylist(
                [
                    {
                        "audio_id": "mixed_call",
                        "date": dt.date.fromisoformat(DAY),
                        "model_id": "random-tiny-seed0",
                        "start_s": 2.0 * i,
                        "end_s": 2.0 * (i + 1),
                        "emotion": max(named, key=named.get),
                        "confidence": max(named.values()),
                        **{k: named.get(k, 0.0) for k in schemas.EMOTION_LABELS},
                    }
                    for i, named in enumerate(mixed)
                ],
                schema=schemas.EMOTION_SEGMENTS,
            ),
        ]
    )
    lake.write_partition(data_dir / "lake", "emotion_segments", DAY, segments)
    try:
        assert main(["report", "--date", DAY, "--data-dir", str(data_dir)]) == 0
    finally:
        lake.partition_file(data_dir / "lake", "emotion_segments", DAY).unlink()
    folder = data_dir / "reports" / DAY
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 4
    assert "Emotion distribution" in page and "Clusters" in page and "Timeline long_call" in page
    assert "1 segments" not in page and "3 segments; mostly angry (1), happy (1), sad (1)" in page
    # the emotion arc under the timeline: angry and sad are equally negative, the earlier one is the peak
    assert "Arc: angry → sad · most negative: angry at 0.0–30.0 s (negativity 0.90)" in page
    assert "calm again 30.0 s after it started · did not end calmer" in page
    # negative and calm are decided on the scores, as the peak is: the mostly negative surprised turn
    # is one to recover from, and the recovery is the happy turn, not the neutral-topped one
    assert (
        "Arc: surprised → happy · most negative: surprised at 0.0–2.0 s (negativity 0.55), "
        "calm again 4.0 s after it started · ended calmer"
    ) in page
    for name in (
        "emotion_distribution.png",
        "emotion_clusters.png",
        "timeline_long_call.png",
        "timeline_mixed_call.png",
    ):
        assert (folder / name).read_bytes().startswith(PNG_MAGIC)
    counts = lake.read_partition(data_dir / "lake", "emotion_scores", DAY).column("emotion").to_pylist()
    for label in set(counts):
        assert f"<td>{label}</td><td>{counts.count(label)}</td>" in page
    assert str(folder / "report.html") in capsys.readouterr().out


def test_report_without_a_day_says_what_to_run(day, capsys):
    data_dir, _ = day
    assert main(["report", "--date", "2026-01-01", "--data-dir", str(data_dir)]) == 2
    assert "emo run --date 2026-01-01" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["npy", "parquet", "csv"])
def test_export_round_trips(day, fmt, tmp_path):
    data_dir, _ = day
    assert main(["export", "--date", DAY, "--format", fmt, "--out", str(tmp_path), "--data-dir", str(data_dir)]) == 0
    scores = lake.read_partition(data_dir / "lake", "emotion_scores", DAY).sort_by("audio_id")
    embeddings = lake.read_partition(data_dir / "lake", "emotion_embeddings", DAY).sort_by("audio_id")
    want_ids = scores.column("audio_id").to_pylist()
    want_emb = lake.embedding_matrix(embeddings)
    want_scores = np.column_stack([scores.column(c).to_numpy() for c in schemas.EMOTION_LABELS])
    if fmt == "npy":
        emb = np.load(tmp_path / f"emotion_embeddings_{DAY}.npy")
        sc = np.load(tmp_path / f"emotion_scores_{DAY}.npy")
        with open(tmp_path / f"index_{DAY}.csv", newline="") as f:
            index = list(csv.DictReader(f))
        assert [r["audio_id"] for r in index] == want_ids
        assert [r["emotion"] for r in index] == scores.column("emotion").to_pylist()
        assert emb.dtype == np.float32 and emb.shape == want_emb.shape
    elif fmt == "parquet":
        table = pq.read_table(tmp_path / f"emotion_{DAY}.parquet")
        assert table.column("audio_id").to_pylist() == want_ids
        assert table.schema.field("embedding").type == pa.list_(pa.float32(), want_emb.shape[1])
        emb = lake.embedding_matrix(table)
        sc = np.column_stack([table.column(c).to_numpy() for c in schemas.EMOTION_LABELS])
    else:
        with open(tmp_path / f"emotion_{DAY}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["audio_id"] for r in rows] == want_ids
        emb = np.array([[float(r[f"e{j}"]) for j in range(want_emb.shape[1])] for r in rows], np.float32)
        sc = np.array([[float(r[c]) for c in schemas.EMOTION_LABELS] for r in rows], np.float32)
    np.testing.assert_array_equal(emb, want_emb)  # exact: float32 survives every format
    np.testing.assert_array_equal(sc, want_scores)


def test_plots_are_pngs_and_markdown_embeds_them():
    png = plots.distribution_png({"happy": 3, "sad": 1})
    assert png.startswith(PNG_MAGIC)
    assert _embedded_png(plots.markdown_image(png, "x")) == png
    assert plots.cluster_scatter_png(np.zeros((0, 2)), np.zeros(0, int)).startswith(PNG_MAGIC)
