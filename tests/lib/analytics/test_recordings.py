import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from emo_assets.lib.analytics.recordings import audio_id_by_source, distinct_recordings, join_labels
from emo_assets.lib.analytics.satisfaction import Label

D1, D2, D3 = dt.date(2026, 11, 28), dt.date(2026, 11, 29), dt.date(2026, 11, 30)


def rows(*pairs) -> pa.Table:
    return pa.table(
        {
            "audio_id": [a for a, _ in pairs],
            "date": pa.array([d for _, d in pairs], pa.date32()),
            "i": list(range(len(pairs))),
        }
    )


def label(value: str, audio_id=None, source_path=None, line: int = 2) -> Label:
    return Label(value, audio_id, source_path, "survey.csv", line)


def test_distinct_recordings_keep_the_earliest_day_of_each_audio_id():
    table = rows(("b", D3), ("a", D2), ("b", D1), ("a", D3), ("c", D2), ("b", D2))
    out = distinct_recordings(table)
    assert out.column("audio_id").to_pylist() == ["a", "b", "c"]
    assert out.column("date").to_pylist() == [D2, D1, D2]
    assert out.column("i").to_pylist() == [1, 2, 4]
    assert table.num_rows == 6  # the input is not modified


def test_distinct_recordings_of_nothing():
    assert distinct_recordings(rows()).num_rows == 0


def test_labels_on_three_days_of_the_same_recordings_count_once():
    """The issue's case: the same bytes on three days, a label row per day: 3 rows, 1 recording."""
    recordings = distinct_recordings(rows(*[(a, d) for d in (D1, D2, D3) for a in ("a", "b")]))
    matrix = np.array([[1.0, 0.0], [0.0, 1.0]])
    by_source = {f"{d}/{a}.wav": a for d in ("d1", "d2", "d3") for a in ("a", "b")}
    labels = [
        label("satisfied" if a == "a" else "dissatisfied", source_path=f"{d}/{a}.wav")
        for d in ("d1", "d2", "d3")
        for a in "ab"
    ]
    joined = join_labels(labels, recordings, matrix, by_source)
    assert joined.audio_ids == ("a", "b") and joined.labels == ("satisfied", "dissatisfied")
    assert joined.n_recordings == 2 and joined.n_label_rows == 6
    np.testing.assert_array_equal(joined.matrix, matrix)
    assert joined.conflicts == () and joined.n_unmatched_rows == 0


def test_conflicting_labels_are_reported_and_left_out():
    recordings = rows(("a", D1), ("b", D1), ("c", D1))
    matrix = np.arange(6.0).reshape(3, 2)
    labels = [
        label("satisfied", audio_id="a", line=2),
        label("dissatisfied", audio_id="a", line=3),
        label("satisfied", audio_id="a", line=4),
        label("satisfied", source_path="x/b.wav", line=5),
        label("dissatisfied", audio_id="zz", line=6),  # no such recording (yet)
        label("dissatisfied", source_path="x/unknown.wav", line=7),
    ]
    joined = join_labels(labels, recordings, matrix, {"x/b.wav": "b"})
    assert joined.audio_ids == ("b",) and joined.labels == ("satisfied",)
    np.testing.assert_array_equal(joined.matrix, matrix[[1]])
    (conflict,) = joined.conflicts
    assert conflict.audio_id == "a" and conflict.labels == ("dissatisfied", "satisfied")
    assert conflict.rows == ("survey.csv:2", "survey.csv:3", "survey.csv:4")
    assert joined.n_unmatched_rows == 2 and joined.n_label_rows == 6


def test_join_needs_distinct_recordings_and_one_row_each():
    with pytest.raises(ValueError, match="distinct_recordings"):
        join_labels([], rows(("a", D1), ("a", D2)), np.zeros((2, 2)), {})
    with pytest.raises(ValueError, match="2 recordings but 3"):
        join_labels([], rows(("a", D1), ("b", D2)), np.zeros((3, 2)), {})


def test_audio_id_by_source():
    assert audio_id_by_source(None) == {}
    table = pa.table({"source_path": ["d/a.wav", "d/copy.wav"], "audio_id": ["x", "x"]})
    assert audio_id_by_source(table) == {"d/a.wav": "x", "d/copy.wav": "x"}
