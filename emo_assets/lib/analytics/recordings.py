"""What the models are fitted on: distinct recordings, and the labels joined to them.

The same bytes landing on several days are one recording (one ``audio_id``, the SHA-256 of the
file): fitting on every row would count it once per day, and a cross-validation that puts one copy
in training and another in the test fold scores memory, not skill. So fits see one row per
``audio_id`` and one label per recording.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from emo_assets.lib.analytics.satisfaction import Label


def distinct_recordings(embeddings: pa.Table) -> pa.Table:
    """One row per ``audio_id``: the one of its earliest day. Input rows are not modified.

    ``embeddings`` has at least ``audio_id`` and ``date``; rows come back sorted by ``audio_id``.
    """
    if embeddings.num_rows == 0:
        return embeddings
    ordered = embeddings.sort_by([("audio_id", "ascending"), ("date", "ascending")])
    ids = np.asarray(ordered.column("audio_id").to_pylist(), dtype=object)
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return ordered.filter(pa.array(first))


@dataclass(frozen=True)
class LabelConflict:
    """One recording labelled differently in different rows: left out of the fit."""

    audio_id: str
    labels: tuple[str, ...]  # the distinct labels, sorted
    rows: tuple[str, ...]  # "file:line" of every row naming it


@dataclass(frozen=True)
class LabelledRecordings:
    """Labels joined to distinct recordings: one row of ``matrix`` per labelled recording."""

    audio_ids: tuple[str, ...]
    labels: tuple[str, ...]
    matrix: np.ndarray  # [len(audio_ids), D]
    n_label_rows: int  # labelled rows in the CSVs
    n_unmatched_rows: int  # rows naming no recording that has an embedding (yet)
    conflicts: tuple[LabelConflict, ...]

    @property
    def n_recordings(self) -> int:
        return len(self.audio_ids)


def join_labels(
    labels: Sequence[Label],
    recordings: pa.Table,
    matrix: np.ndarray,
    audio_id_by_source: Mapping[str, str],
) -> LabelledRecordings:
    """Join label rows to distinct recordings.

    ``recordings`` has one row per ``audio_id`` (see :func:`distinct_recordings`) and ``matrix`` its
    embeddings, row for row. A label names its recording by ``audio_id`` or by ``source_path``
    (looked up in ``audio_id_by_source``). Several rows naming one recording with one label count
    once; with two or more labels the recording is a conflict and is left out. Rows naming no
    recording with an embedding are counted in ``n_unmatched_rows``.
    """
    ids = recordings.column("audio_id").to_pylist()
    if len(set(ids)) != len(ids):
        raise ValueError("join_labels: recordings must hold one row per audio_id; use distinct_recordings first")
    matrix = np.asarray(matrix)
    if matrix.shape[0] != len(ids):
        raise ValueError(f"join_labels: {len(ids)} recordings but {matrix.shape[0]} embedding rows")
    index = {audio_id: i for i, audio_id in enumerate(ids)}
    named: dict[str, set[str]] = defaultdict(set)
    where: dict[str, list[str]] = defaultdict(list)
    unmatched = 0
    for label in labels:
        audio_id = label.audio_id or audio_id_by_source.get(label.source_path or "")
        if audio_id not in index:
            unmatched += 1
            continue
        named[audio_id].add(label.label)
        where[audio_id].append(f"{label.file}:{label.line}")
    agreed = sorted(a for a, values in named.items() if len(values) == 1)
    conflicts = tuple(
        LabelConflict(a, tuple(sorted(values)), tuple(where[a]))
        for a, values in sorted(named.items())
        if len(values) > 1
    )
    return LabelledRecordings(
        audio_ids=tuple(agreed),
        labels=tuple(next(iter(named[a])) for a in agreed),
        matrix=matrix[[index[a] for a in agreed]] if agreed else matrix[:0],
        n_label_rows=len(labels),
        n_unmatched_rows=unmatched,
        conflicts=conflicts,
    )


def audio_id_by_source(audio_files: pa.Table | None) -> dict[str, str]:
    """``source_path`` -> ``audio_id`` from the lake's ``audio_files`` rows (empty without any)."""
    if audio_files is None:
        return {}
    return dict(zip(audio_files.column("source_path").to_pylist(), audio_files.column("audio_id").to_pylist()))
