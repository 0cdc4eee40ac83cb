"""`emo web` through its HTTP API on a day of speech run by the real assets: every recording opens as
a page with the sides it has (a call whose channels.toml names only an agent, a mono call in a
two-channel folder), and an upload is cut into speech turns as the pipeline cuts it."""

from __future__ import annotations

import io
import urllib.request

import dagster as dg
import numpy as np
import pytest
import soundfile as sf

from emo_assets.assets import all_assets
from emo_assets.checks import all_checks
from emo_assets.lib.audio.spoken import spoken_call, spoken_speech
from emo_assets.lib.store import lake
from emo_assets.resources import EmotionModelResource
from tests.helpers import DAY, failed_steps, resources
from tests.test_web import _serving
from tests.test_web_guard import _multipart, _request


@pytest.fixture(scope="module")
def agent_only_day(tmp_path_factory, tiny_model_dir):
    """calls/: a two-voice stereo call under a channels.toml naming only the agent, and two mono calls.
    Run with the default settings (speech turns)."""
    data_dir = tmp_path_factory.mktemp("agent_only")
    calls = data_dir / "raw" / DAY / "calls"
    calls.mkdir(parents=True)
    (calls / "channels.toml").write_text('[channels]\nagent = "left"\n')
    sf.write(calls / "stereo.wav", spoken_call(7.0, 16000, 21).T, 16000, subtype="PCM_16")
    sf.write(calls / "mono.wav", spoken_speech(3.0, 16000, 22)[0], 16000, subtype="PCM_16")
    sf.write(calls / "other.wav", spoken_speech(3.0, 16000, 23)[0], 16000, subtype="PCM_16")
    emotion_model = EmotionModelResource(model=str(tiny_model_dir), device="cpu")
    assert emotion_model.segments == "turns"  # the default
    res = {**resources(data_dir, tiny_model_dir), "emotion_model": emotion_model}
    result = dg.materialize([*all_assets(), *all_checks], partition_key=DAY, resources=res, raise_on_error=False)
    assert result.success, failed_steps(result)
    files = lake.read_partition(data_dir / "lake", "audio_files", DAY).to_pylist()
    ids = {f["source_path"].rsplit("/", 1)[1]: f["audio_id"] for f in files}
    with _serving(data_dir, emotion_model) as url:
        yield url, data_dir, ids


def test_a_call_with_no_customer_side_opens_with_the_sides_it_has(agent_only_day):
    url, data_dir, ids = agent_only_day
    scores = lake.read_partition(data_dir / "lake", "emotion_scores", DAY).to_pylist()
    sides = {r["channel"]: r for r in scores if r["audio_id"] == ids["stereo.wav"]}
    assert sorted(sides) == ["agent", "right"]  # the side not named keeps its position

    status, _, page = _request(f"{url}/api/recording/{ids['stereo.wav']}")
    assert status == 200, page
    assert page["channel"] == "agent"
    assert page["result"]["emotion"] == sides["agent"]["emotion"]
    assert page["result"]["confidence"] == pytest.approx(sides["agent"]["confidence"])
    segments = lake.read_partition(data_dir / "lake", "emotion_segments", DAY).to_pylist()
    turns = {c: [s for s in segments if s["audio_id"] == ids["stereo.wav"] and s["channel"] == c] for c in sides}
    assert len(page["segments"]) == len(turns["agent"]) >= 1
    (right,) = page["other_voices"]
    assert right["channel"] == "right" and len(right["segments"]) == len(turns["right"]) >= 1
    # the similarity index holds the folder's mono calls; the agent's side is compared with them
    assert {n["audio_id"] for n in page["similar"]} == {ids["mono.wav"], ids["other.wav"]}


def test_the_recording_list_names_a_call_with_no_customer_side(agent_only_day):
    url, _, ids = agent_only_day
    status, _, listed = _request(f"{url}/api/recordings")
    assert status == 200
    assert sorted(r["audio_id"] for r in listed) == sorted(ids.values())


def test_a_mono_call_in_a_two_channel_folder_opens_as_mono(agent_only_day):
    url, _, ids = agent_only_day
    status, _, page = _request(f"{url}/api/recording/{ids['mono.wav']}")
    assert status == 200, page
    assert page["channel"] == "mono" and page["other_voices"] == [] and len(page["segments"]) >= 1
    assert ids["mono.wav"] not in {n["audio_id"] for n in page["similar"]}


def test_an_unknown_recording_is_still_404(agent_only_day):
    url, _, _ = agent_only_day
    status, _, page = _request(f"{url}/api/recording/{'f' * 64}")
    assert status == 404 and "no recording" in page["detail"]


def test_an_upload_is_cut_into_speech_turns_and_gives_the_lake_embedding(agent_only_day):
    url, data_dir, ids = agent_only_day
    upload = (data_dir / "raw" / DAY / "calls" / "mono.wav").read_bytes()
    status, _, page = _request(f"{url}/api/analyze", *_multipart("mono.wav", upload))
    assert status == 200, page
    lake_turns = [
        s
        for s in lake.read_partition(data_dir / "lake", "emotion_segments", DAY).to_pylist()
        if s["audio_id"] == ids["mono.wav"]
    ]
    assert page["result"]["segments"] == "turns"
    assert [(t["start_s"], t["end_s"]) for t in page["result"]["turns"]] == [
        (round(t["start_s"], 3), round(t["end_s"], 3)) for t in sorted(lake_turns, key=lambda t: t["turn"])
    ]
    embeddings = lake.read_partition(data_dir / "lake", "emotion_embeddings", DAY)
    (row,) = [i for i, a in enumerate(embeddings.column("audio_id").to_pylist()) if a == ids["mono.wav"]]
    with urllib.request.urlopen(f"{url}{page['downloads']['embedding.npy']}", timeout=60) as response:
        uploaded = np.load(io.BytesIO(response.read()))
    np.testing.assert_allclose(uploaded[0], lake.embedding_matrix(embeddings)[row], rtol=1e-5, atol=1e-6)
    # the most similar recording to the upload is the same file in the warehouse
    assert page["similar"][0]["audio_id"] == ids["mono.wav"]


def test_an_upload_with_no_speech_is_refused(agent_only_day, tmp_path):
    url, _, _ = agent_only_day
    hum = 0.05 * np.sin(2 * np.pi * 50 * np.arange(3 * 16000) / 16000)
    buffer = io.BytesIO()
    sf.write(buffer, hum.astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    status, _, page = _request(f"{url}/api/analyze", *_multipart("hum.wav", buffer.getvalue()))
    assert status == 422 and "no speech" in page["detail"]
