"""PNG charts of emotion results: distribution bars, PCA scatter by cluster, emotion timeline,
a call's emotion arc, drift over days.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so
it works headless and in threads. Each function returns PNG bytes; ``markdown_image`` wraps
them for Dagster metadata (``MetadataValue.md`` renders an embedded data-URI image). No dagster.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from emo_assets.lib.files.atomic import atomic_write
from emo_assets.lib.schemas import EMOTION_LABELS

# One colour per emotion, fixed so every chart agrees.
EMOTION_COLOURS = {
    "angry": "#d62728",
    "disgusted": "#8c564b",
    "fearful": "#9467bd",
    "happy": "#f2b701",
    "neutral": "#7f7f7f",
    "other": "#17becf",
    "sad": "#1f77b4",
    "surprised": "#ff7f0e",
    "unknown": "#c7c7c7",
}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def distribution_png(counts: Mapping[str, int], title: str = "Emotion distribution") -> bytes:
    """Bars of recordings per emotion, the 9 classes in EMOTION_LABELS order."""
    fig = _figure(7, 3.2)
    ax = fig.add_subplot()
    values = [int(counts.get(label, 0)) for label in EMOTION_LABELS]
    bars = ax.bar(EMOTION_LABELS, values, color=[EMOTION_COLOURS[e] for e in EMOTION_LABELS])
    ax.bar_label(bars, fontsize=8)
    ax.set_ylabel("recordings")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30)
    return _png(fig)


def cluster_scatter_png(xy: np.ndarray, cluster_id: np.ndarray, title: str = "Embeddings: PCA by cluster") -> bytes:
    """2-D PCA points coloured by cluster id."""
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
    cluster_id = np.asarray(cluster_id).reshape(-1)
    fig = _figure(5.5, 4.5)
    ax = fig.add_subplot()
    for k in np.unique(cluster_id):
        mask = cluster_id == k
        ax.scatter(xy[mask, 0], xy[mask, 1], s=14, alpha=0.8, label=f"cluster {int(k)} ({int(mask.sum())})")
    if cluster_id.size:
        ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    return _png(fig)


def timeline_png(
    start_s: Sequence[float],
    end_s: Sequence[float],
    scores: np.ndarray,
    title: str,
    peak: tuple[float, float] | None = None,
) -> bytes:
    """Stacked class scores over a recording's segments (x = seconds); ``peak`` (start, end) outlines
    the most negative turn of the emotion arc."""
    start = np.asarray(start_s, dtype=np.float64)
    end = np.asarray(end_s, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, len(EMOTION_LABELS))
    fig = _figure(8, 2.6)
    ax = fig.add_subplot()
    bottom = np.zeros(len(start))
    for j, label in enumerate(EMOTION_LABELS):
        ax.bar(
            start,
            scores[:, j],
            width=end - start,
            bottom=bottom,
            align="edge",
            color=EMOTION_COLOURS[label],
            label=label,
            linewidth=0,
        )
        bottom += scores[:, j]
    if peak is not None:
        ax.axvspan(peak[0], peak[1], fill=False, edgecolor="black", linewidth=2, label="most negative")
    ax.set_xlim(float(start.min(initial=0.0)), float(end.max(initial=1.0)))
    ax.set_ylim(0, 1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=9, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    return _png(fig)


def drift_png(
    days: Sequence[str],
    psi: Sequence[float | None],
    shift: Sequence[float | None],
    psi_warn: float,
    cosine_warn: float,
    title: str,
) -> bytes:
    """Two panels over days: PSI and cosine shift, each with its warning threshold dashed; a day
    without a baseline is a gap."""
    x = np.arange(len(days))
    fig = _figure(8, 4.2)
    axes = fig.subplots(2, 1, sharex=True)
    for ax, values, warn, name in ((axes[0], psi, psi_warn, "PSI"), (axes[1], shift, cosine_warn, "cosine shift")):
        y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        ax.plot(x, y, marker="o", markersize=3, color="#1f77b4")
        over = y > warn
        ax.scatter(x[over], y[over], color="#d62728", zorder=3, s=18, label="past threshold")
        ax.axhline(warn, color="#d62728", linestyle="--", linewidth=1)
        ax.set_ylabel(name)
        if over.any():
            ax.legend(fontsize=7, loc="upper left")
    axes[0].set_title(title)
    step = max(1, len(days) // 10)
    axes[1].set_xticks(x[::step], [d[5:] for d in days][::step], fontsize=7)
    return _png(fig)


def markdown_image(png: bytes, alt: str = "") -> str:
    """Markdown showing ``png`` inline (what the Dagster UI renders for ``MetadataValue.md``)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def write_png(path: Path, png: bytes) -> Path:
    """Write ``png`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(png)
    return path
