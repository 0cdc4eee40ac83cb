"""Two-channel calls through the real assets: agent and customer (two espeak-ng voices) on the two
sides of a stereo file under a channels.toml are scored each on its own; the customer's channel
feeds satisfaction; a stereo file with identical sides stays one mono recording."""

import dagster as dg
import duckdb
import numpy as np
import pytest
import soundfile as sf

from emo_assets.assets import all_assets
from emo_assets.checks import all_checks
from emo_assets.lib import schemas
from emo_assets.lib.analytics.satisfaction import satisfaction_rule
from emo_assets.lib.store import lake
from emo_assets.resources import EmotionModelResource
from tests.helpers import DAY, resources, stereo_conversation


@pytest.fixture(scope="module")
def call_day(tmp_path_factory, tiny_model_dir):
    data_dir = tmp_path_factory.mktemp("stereo")
    day = data_dir / "raw" / DAY
    day.mkdir(parents=True)
    stereo, spans = stereo_conversation()
    sf.write(day / "call.wav", stereo, 16000, subtype="PCM_16")
    mono = stereo[:, 0] + stereo[:, 1]
    sf.write(day / "duplicated.wav", np.stack([mono, mono], axis=1), 16000, subtype="PCM_16")
    (day / "channels.toml").write_text('[channels]\nagent = "left"\ncustomer = "right"\n')
    res = {
        **resources(data_dir, tiny_model_dir),
        "emotion_model": EmotionModelResource(model=str(tiny_model_dir), device="cpu", segments="turns"),
    }
    result = dg.materialize([*all_assets(), *all_checks], partition_key=DAY, resources=res, raise_on_error=False)
    assert result.success
    return data_dir, spans, result


def _ids(data_dir) -> dict[str, str]:
    files = lake.read_partition(data_dir / "lake", "audio_files", DAY).to_pylist()
    return {f["source_path"].rsplit("/", 1)[1]: f["audio_id"] for f in files}


def test_each_side_is_scored_on_its_own(call_day):
    data_dir, spans, _ = call_day
    ids = _ids(data_dir)
    resampled = lake.read_partition(data_dir / "lake", "resampled_audio", DAY).to_pylist()
    assert sorted((r["audio_id"], r["channel"]) for r in resampled) == sorted(
        [(ids["call.wav"], "agent"), (ids["call.wav"], "customer"), (ids["duplicated.wav"], "mono")]
    )
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        scores = con.execute("SELECT audio_id, channel FROM emotion_scores ORDER BY ALL").fetchall()
        turns = con.execute(
            "SELECT channel, turn, start_s, end_s FROM emotion_segments WHERE audio_id = ? ORDER BY channel, turn",
            [ids["call.wav"]],
        ).fetchall()
    assert sorted(scores) == sorted(
        [(ids["call.wav"], "agent"), (ids["call.wav"], "customer"), (ids["duplicated.wav"], "mono")]
    )
    for voice in ("agent", "customer"):
        found = [(s, e) for channel, _, s, e in turns if channel == voice]
        assert len(found) == len(spans[voice]), (voice, found)
        for (s, e), (es, ee) in zip(found, spans[voice], strict=True):
            assert abs(s - es) <= 0.3 and abs(e - ee) <= 0.3
    assert [t for c, t, _, _ in turns if c == "agent"] == [0, 1]


def test_the_day_counts_recordings_and_hours_once_whatever_their_sides(call_day):
    data_dir, _, result = call_day
    metadata = result.asset_materializations_for_node("resampled_audio")[0].metadata
    info = sf.info(data_dir / "raw" / DAY / "call.wav")
    seconds = info.duration + sf.info(data_dir / "raw" / DAY / "duplicated.wav").duration
    assert metadata["row_count"].value == 3  # the call's two sides and the mono file
    assert metadata["recordings"].value == 2
    assert metadata["hours_of_audio"].value * 3600 == pytest.approx(seconds, abs=0.01)


def test_the_customer_channel_feeds_satisfaction(call_day):
    data_dir, _, _ = call_day
    ids = _ids(data_dir)
    scores = lake.read_partition(data_dir / "lake", "emotion_scores", DAY).to_pylist()
    customer = next(r for r in scores if r["audio_id"] == ids["call.wav"] and r["channel"] == "customer")
    (label,), (probability,) = satisfaction_rule(
        np.array([[customer[c] for c in schemas.EMOTION_LABELS]]), schemas.EMOTION_LABELS
    )
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT audio_id, label, probability FROM satisfaction_predictions ORDER BY 1").fetchall()
        clusters = con.execute("SELECT count(*), count(DISTINCT audio_id) FROM emotion_clusters").fetchone()
    assert sorted(a for a, _, _ in rows) == sorted(ids.values())  # one prediction per call
    (call,) = [r for r in rows if r[0] == ids["call.wav"]]
    assert call[1] == label and call[2] == pytest.approx(probability, abs=1e-6)
    assert clusters == (2, 2)


def test_a_stereo_file_with_identical_sides_stays_mono(call_day):
    data_dir, _, _ = call_day
    ids = _ids(data_dir)
    files = sorted(p.name for p in (data_dir / "resampled" / f"date={DAY}").glob("*.flac"))
    assert files == sorted(
        [f"{ids['call.wav']}.agent.flac", f"{ids['call.wav']}.customer.flac", f"{ids['duplicated.wav']}.flac"]
    )
    segments = lake.read_partition(data_dir / "lake", "emotion_segments", DAY).to_pylist()
    assert {s["channel"] for s in segments if s["audio_id"] == ids["duplicated.wav"]} == {"mono"}


def test_export_keeps_each_side_with_its_own_embedding(call_day, tmp_path):
    from emo_assets.lib.results.export import day_rows

    data_dir, _, _ = call_day
    scores, matrix = day_rows(data_dir / "lake", DAY)
    embeddings = lake.read_partition(data_dir / "lake", "emotion_embeddings", DAY)
    by_key = {
        (a, c): v
        for a, c, v in zip(
            embeddings.column("audio_id").to_pylist(),
            embeddings.column("channel").to_pylist(),
            lake.embedding_matrix(embeddings),
        )
    }
    keys = list(zip(scores.column("audio_id").to_pylist(), scores.column("channel").to_pylist()))
    assert len(keys) == 3 and len(set(keys)) == 3
    for key, row in zip(keys, matrix, strict=True):
        np.testing.assert_array_equal(row, by_key[key])


def test_each_side_has_its_own_arc_and_report_timeline(call_day, tmp_path):
    import html

    from emo_assets.lib.results.report import arc_sentence, write_day_report

    data_dir, spans, _ = call_day
    call = _ids(data_dir)["call.wav"]
    arcs = {
        a["channel"]: a
        for a in lake.read_partition(data_dir / "lake", "call_emotion_arc", DAY).to_pylist()
        if a["audio_id"] == call
    }
    assert sorted(arcs) == ["agent", "customer"]
    assert arcs["agent"]["turns"] == len(spans["agent"]) and arcs["customer"]["turns"] == len(spans["customer"])
    assert abs(arcs["agent"]["duration_s"] - (spans["agent"][-1][1] - spans["agent"][0][0])) <= 0.6

    report = write_day_report(data_dir / "lake", data_dir / "models", tmp_path, DAY)
    page = report.html_path.read_text(encoding="utf-8")
    for side in ("agent", "customer"):
        assert (tmp_path / DAY / f"timeline_{call[:16]}_{side}.png").is_file()
        assert f"Timeline {call[:16]} ({side})" in page
        assert html.escape(arc_sentence(arcs[side])) in page
        n = arcs[side]["turns"]
        assert f"{n} speech turn{'' if n == 1 else 's'}; mostly" in page


def test_figures_of_recordings_count_a_call_once_by_its_customer_side(call_day, tmp_path, capsys):
    """The emotion distribution (the asset's chart and `emo report`'s), the report's clusters and
    `emo run`'s top emotions count recordings: the call by its customer side, the mono file once."""
    import re
    from collections import Counter
    from types import SimpleNamespace

    from emo_assets.cli import print_summary
    from emo_assets.lib.results.report import write_day_report

    data_dir, _, result = call_day
    ids = _ids(data_dir)
    scores = lake.read_partition(data_dir / "lake", "emotion_scores", DAY).to_pylist()
    by_recording = {r["audio_id"]: r["emotion"] for r in scores if r["channel"] in ("customer", "mono")}
    assert sorted(by_recording) == sorted(ids.values())
    counted = Counter(by_recording.values())
    expected = {label: counted.get(label, 0) for label in schemas.EMOTION_LABELS}

    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("emotion_scores")]
    metadata = event.materialization.metadata
    assert metadata["emotion_distribution"].value == expected

    report = write_day_report(data_dir / "lake", data_dir / "models", tmp_path, DAY)
    assert report.counts == expected
    page = report.html_path.read_text(encoding="utf-8")
    for label, n in expected.items():
        assert f"<td>{label}</td><td>{n}</td>" in page
    sizes = [int(n) for n in re.findall(r"cluster \d+: (\d+)", page)]
    assert sum(sizes) == 2  # one point per recording
    # the per-side views stay per side: a timeline for each side of the call
    assert f"Timeline {ids['call.wav'][:16]} (agent)" in page

    model = SimpleNamespace(model_id="random-tiny-seed0", is_random=False)
    print_summary(resources(data_dir, data_dir)["storage"], DAY, model)
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("top emotions")]
    shown = dict(re.findall(r"(\w+) \((\d+)\)", line))
    assert {e: int(n) for e, n in shown.items()} == {e: n for e, n in counted.most_common(3)}


def _run_silent_customer_day(data_dir, model_dir, with_mono: bool):
    """A day with a two-voice call whose customer side is silent (``call.wav``), and with
    ``with_mono`` a mono mix of the same call (``other.wav``), run by speech turns."""
    day = data_dir / "raw" / DAY
    day.mkdir(parents=True)
    stereo, _ = stereo_conversation()
    if with_mono:
        sf.write(day / "other.wav", stereo[:, 0] + stereo[:, 1], 16000, subtype="PCM_16")
    stereo[:, 1] = 0.0
    sf.write(day / "call.wav", stereo, 16000, subtype="PCM_16")
    (day / "channels.toml").write_text('[channels]\nagent = "left"\ncustomer = "right"\n')
    res = {
        **resources(data_dir, model_dir),
        "emotion_model": EmotionModelResource(model=str(model_dir), device="cpu", segments="turns"),
    }
    return dg.materialize([*all_assets(), *all_checks], partition_key=DAY, resources=res, raise_on_error=False)


def test_a_call_whose_customer_side_holds_no_speech_has_no_satisfaction_prediction(tmp_path, tiny_model_dir):
    """The agent's side is scored; the silent customer side has no speech, so no row (and no
    quarantine row: the file was processed, by its agent side). Nothing stands for the call where
    one row per recording is wanted: no satisfaction prediction, no cluster, not in the similarity
    index; the rest of the day is untouched."""
    data_dir = tmp_path / "data"
    result = _run_silent_customer_day(data_dir, tiny_model_dir, with_mono=True)
    assert result.success
    ids = _ids(data_dir)
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        scored = con.execute("SELECT audio_id, channel FROM emotion_scores ORDER BY ALL").fetchall()
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        predicted = con.execute("SELECT audio_id FROM satisfaction_predictions").fetchall()
        clustered = con.execute("SELECT audio_id FROM emotion_clusters").fetchall()
        indexed = con.execute("SELECT audio_id, channel FROM embedding_index").fetchall()
    assert sorted(scored) == sorted([(ids["call.wav"], "agent"), (ids["other.wav"], "mono")])
    assert quarantined == 0
    assert predicted == [(ids["other.wav"],)] and clustered == [(ids["other.wav"],)]
    assert indexed == [(ids["other.wav"], "mono")]  # the similarity index holds one row per recording


def test_a_first_day_of_agents_sides_only_says_why_there_is_nothing_to_fit(tmp_path, tiny_model_dir):
    """The day's only call has a silent customer side: the models have nothing that stands for a
    call to fit on, and the step says so (not that emotion_embeddings were never materialized)."""
    from tests.helpers import step_failure_messages

    data_dir = tmp_path / "data"
    result = _run_silent_customer_day(data_dir, tiny_model_dir, with_mono=False)
    failed = step_failure_messages(result)
    assert sorted(failed) == ["emotion_cluster_model", "satisfaction_model"], failed
    for message in failed.values():
        assert "all of agents' sides of two-channel calls" in message and "emotion_embeddings yet" not in message
    assert lake.read_partition(data_dir / "lake", "emotion_scores", DAY).column("channel").to_pylist() == ["agent"]


def test_the_readmes_drift_query_counts_recordings_as_the_check_does(call_day):
    """README's "as the check sees it" query, on a day with a two-channel call: one row per
    recording (the customer side, else mono; lake.voice_rows), as emotion_drift counts them."""
    import re
    from collections import Counter

    from tests.helpers import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (query,) = [b for b in re.findall(r"```sql\n(.*?)```", readme, flags=re.S) if "as the check sees it" in b]
    data_dir, _, _ = call_day
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        found = con.execute(query)
        names = [c[0] for c in found.description]
        rows = [dict(zip(names, r)) for r in found.fetchall()]
    shown = Counter()
    for r in rows:
        shown[r["emotion"]] += r["recordings"]
    counted = Counter(
        r["emotion"] for r in lake.voice_rows(lake.read_partition(data_dir / "lake", "emotion_scores", DAY)).to_pylist()
    )
    assert shown == counted and sum(counted.values()) == 2  # the call and the mono file
    assert {str(r["date"]) for r in rows} == {DAY} and "model_id" in names  # per day and model, as the check
