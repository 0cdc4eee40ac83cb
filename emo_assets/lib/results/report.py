"""One day on one HTML page: the emotion distribution, the clusters and emotion timelines.

The distribution and the clusters count recordings, one row each (``lake.voice_rows``: the customer
side of a two-channel call, else the mono one); the timelines are per side, each titled with it.

``write_day_report(lake_dir, models_dir, reports_dir, day)`` writes ``<reports>/<day>/``:
``report.html`` (self-contained: images are embedded), and the same charts as PNG files:
``emotion_distribution.png``, ``emotion_clusters.png`` (when a cluster model exists),
``timeline_<audio_id>.png`` (for recordings with rows in ``emotion_segments``, the long ones).
No dagster here.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emo_assets.lib.analytics.arc import arc_rows, arc_sentence
from emo_assets.lib.files.atomic import atomic_write
from emo_assets.lib.results import plots
from emo_assets.lib.schemas import EMOTION_LABELS, MONO
from emo_assets.lib.store import lake
from emo_assets.lib.store.paths import fitted_model_path

MAX_TIMELINES = 12


class ReportError(ValueError):
    pass


@dataclass
class DayReport:
    day: str
    html_path: Path
    pngs: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def write_day_report(lake_dir: Path, models_dir: Path, reports_dir: Path, day: str) -> DayReport:
    scores = lake.read_partition(lake_dir, "emotion_scores", day)
    if scores is None:
        raise ReportError(f"no emotion_scores for {day} under {lake_dir}: run `emo run --date {day}` first")
    out_dir = Path(reports_dir) / day
    report = DayReport(day=day, html_path=out_dir / "report.html")
    recordings = lake.voice_rows(scores)  # one row per recording: a two-channel call by its customer side
    counts = Counter(recordings.column("emotion").to_pylist())
    report.counts = {label: counts.get(label, 0) for label in EMOTION_LABELS}
    sections: list[tuple[str, bytes | None, str]] = []

    png = plots.distribution_png(report.counts, f"Emotions on {day} ({recordings.num_rows} recordings)")
    report.pngs.append(plots.write_png(out_dir / "emotion_distribution.png", png))
    sections.append(("Emotion distribution", png, _counts_table(report.counts)))

    sections.append(_clusters_section(lake_dir, Path(models_dir), day, out_dir, report))
    sections.extend(_timeline_sections(lake_dir, day, out_dir, report))

    page = _page(day, sections, report.notes)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(report.html_path) as f:
        f.write(page.encode("utf-8"))
    return report


def _clusters_section(lake_dir, models_dir, day, out_dir, report):
    from emo_assets.lib.analytics.clustering import assign_clusters, load_cluster_model

    path = fitted_model_path(models_dir, "emotion_cluster_model")
    embeddings = lake.read_partition(lake_dir, "emotion_embeddings", day)
    if not path.exists() or embeddings is None:
        note = "no cluster model yet: materialize emotion_cluster_model (emo run --refit-models)"
        report.notes.append(note)
        return ("Clusters", None, html.escape(note))
    model = load_cluster_model(path)
    embeddings = lake.voice_rows(embeddings)  # one point per recording, as the model was fitted
    embeddings = embeddings.filter(pc.equal(embeddings.column("model_id"), model.model_id))
    if embeddings.num_rows == 0:
        note = f"the cluster model was fitted on {model.model_id}, which scored no recording on {day}"
        report.notes.append(note)
        return ("Clusters", None, html.escape(note))
    cluster_id, xy, _ = assign_clusters(model, lake.embedding_matrix(embeddings))
    png = plots.cluster_scatter_png(xy, cluster_id, f"{day}: {embeddings.num_rows} recordings, k={model.k}")
    report.pngs.append(plots.write_png(out_dir / "emotion_clusters.png", png))
    sizes = Counter(cluster_id.tolist())
    text = ", ".join(f"cluster {k}: {n}" for k, n in sorted(sizes.items()))
    return ("Clusters (PCA of the embeddings)", png, html.escape(text))


def _timeline_sections(lake_dir, day, out_dir, report):
    """One timeline per voice of the day's first recordings: a two-channel call's sides each get their own."""
    segments = lake.read_partition(lake_dir, "emotion_segments", day)
    if segments is None or segments.num_rows == 0:
        report.notes.append("no emotion_segments for this day: no timelines")
        return []
    if "channel" not in segments.column_names:  # written before channels existed: one mono voice
        segments = segments.append_column("channel", pa.nulls(segments.num_rows, pa.string()))
    segments = segments.set_column(
        segments.schema.get_field_index("channel"), "channel", pc.fill_null(segments.column("channel"), MONO)
    )
    sections = []
    arcs: dict[tuple[str, str], list[dict]] = {}
    for a in arc_rows(segments).to_pylist():
        arcs.setdefault((a["audio_id"], a["channel"]), []).append(a)
    ids = sorted(set(segments.column("audio_id").to_pylist()))
    for audio_id in ids[:MAX_TIMELINES]:
        recording = segments.filter(pc.equal(segments.column("audio_id"), audio_id))
        for channel in sorted(set(recording.column("channel").to_pylist())):
            rows = recording.filter(pc.equal(recording.column("channel"), channel)).sort_by("start_s")
            scores = np.column_stack([rows.column(c).to_numpy() for c in EMOTION_LABELS])
            voice = arcs.get((audio_id, channel), [])
            arc = voice[0] if len(voice) == 1 else None  # several models in one day: see call_emotion_arc
            name = audio_id[:16] if channel == MONO else f"{audio_id[:16]} ({channel})"
            png = plots.timeline_png(
                rows.column("start_s").to_numpy(),
                rows.column("end_s").to_numpy(),
                scores,
                f"{name}: emotion over time",
                peak=None if arc is None else (arc["peak_start_s"], arc["peak_end_s"]),
            )
            suffix = "" if channel == MONO else f"_{channel}"
            report.pngs.append(plots.write_png(out_dir / f"timeline_{audio_id[:16]}{suffix}.png", png))
            top = Counter(rows.column("emotion").to_pylist()).most_common(3)
            turns = "speech_share" in rows.column_names and rows.column("speech_share").null_count == 0
            what = ("speech turn" if turns else "segment") + ("" if rows.num_rows == 1 else "s")
            sections.append(
                (
                    f"Timeline {name}",
                    png,
                    html.escape(
                        f"{rows.num_rows} {what}; mostly "
                        + ", ".join(f"{e} ({n})" for e, n in top)
                        + ("" if arc is None else f". {arc_sentence(arc)}")
                    ),
                )
            )
    if len(ids) > MAX_TIMELINES:
        report.notes.append(f"timelines shown for {MAX_TIMELINES} of {len(ids)} recordings")
    return sections


def _counts_table(counts: dict[str, int]) -> str:
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in counts.items())
    return f"<table><tr><th>emotion</th><th>recordings</th></tr>{cells}</table>"


def _page(day: str, sections, notes: list[str]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>emo-assets report {html.escape(day)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}img{max-width:100%}"
        "td,th{padding:0 1em;text-align:left}</style></head><body>",
        f"<h1>Emotions on {html.escape(day)}</h1>",
    ]
    for title, png, text in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if png is not None:
            parts.append(
                f"<img alt='{html.escape(title)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            )
        parts.append(f"<p>{text}</p>")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
