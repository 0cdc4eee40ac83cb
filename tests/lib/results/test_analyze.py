"""`emo analyze`: the WebUI's outputs folder, checked against the model's own numbers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emo_assets.cli import main
from emo_assets.lib.audio.load import load_mono_16k
from emo_assets.lib.audio.sample_day import write_encoded
from emo_assets.lib.results import analyze
from emo_assets.lib.schemas import EMOTION_LABELS


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from emo_assets.resources import EmotionModelResource

    return EmotionModelResource(model=str(tiny_model_dir), device="cpu").load()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(7)
    return {
        "mono16k": write_encoded(
            folder / "call.wav", (rng.standard_normal(24000) * 0.1).astype(np.float32), 16000, "wav_pcm_16"
        ),
        # stereo 44.1 kHz FLAC: processed_audio.wav must come out 16 kHz mono
        "stereo44k": write_encoded(
            folder / "other/call.flac", (rng.standard_normal((2, 44100)) * 0.1).astype(np.float32), 44100, "flac"
        ),
        "broken": _write(folder / "broken.wav", b"RIFF not really"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _run(*args, out: Path, model_dir) -> int:
    return main(["analyze", *map(str, args), "--out", str(out), "--model", str(model_dir), "--device", "cpu"])


def _only_run(out: Path) -> Path:
    runs = sorted(out.glob("outputs_*"))
    assert len(runs) == 1, runs
    assert len(runs[0].name) == len("outputs_YYYYMMDD_HHMMSS")
    return runs[0]


def test_utterance_outputs_match_the_model_and_the_webui_snippet(recordings, model, tiny_model_dir, tmp_path, capsys):
    assert _run(recordings["stereo44k"], out=tmp_path, model_dir=tiny_model_dir) == 0
    p = _only_run(tmp_path)

    # the snippet people bring from the WebUI, unchanged
    emb = np.load(p / "embedding.npy")
    r = json.load(open(p / "result.json"))
    print(emb.shape, r["emotion"], r["confidence"])
    assert capsys.readouterr().out.splitlines()[-1] == f"{emb.shape} {r['emotion']} {r['confidence']}"

    wav = load_mono_16k(recordings["stereo44k"])
    expected = model.infer([wav])[0]
    assert emb.shape == (1, model.embed_dim) and emb.dtype == np.float32
    np.testing.assert_allclose(emb[0], expected.embedding, rtol=1e-5, atol=1e-6)
    assert list(r["scores"]) == list(EMOTION_LABELS)
    np.testing.assert_allclose([r["scores"][k] for k in EMOTION_LABELS], expected.scores, rtol=1e-6)
    assert r["emotion"] == max(r["scores"], key=r["scores"].get) == expected.emotion
    assert r["confidence"] == max(r["scores"].values())
    assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert r["emoji"] == analyze.EMOJI[r["emotion"]]
    assert (r["granularity"], r["model_id"], r["audio_name"]) == ("utterance", "random-tiny-seed0", "call.flac")
    assert r["duration_s"] == pytest.approx(1.0, abs=1e-3) and r["random_weights"] is True
    assert r["embedding_shape"] == [1, model.embed_dim]
    dt.datetime.fromisoformat(r["timestamp"])

    audio, sr = sf.read(p / "processed_audio.wav", dtype="float32")
    assert sr == 16000 and audio.ndim == 1 and len(audio) == len(wav)
    np.testing.assert_allclose(audio, np.clip(wav, -1, 1), atol=1 / 32768 + 1e-6)


def test_frame_granularity_writes_one_row_per_frame(recordings, model, tiny_model_dir, tmp_path):
    assert _run(recordings["mono16k"], "--granularity", "frame", out=tmp_path, model_dir=tiny_model_dir) == 0
    p = _only_run(tmp_path)
    emb = np.load(p / "embedding.npy")
    frames = model.infer_frames(load_mono_16k(recordings["mono16k"])).embeddings
    assert emb.shape == frames.shape == (74, model.embed_dim)  # 1.5 s at 50 frames/s, minus the conv edge
    np.testing.assert_allclose(emb, frames, rtol=1e-5, atol=1e-6)
    r = json.loads((p / "result.json").read_text())
    assert r["granularity"] == "frame" and r["embedding_shape"] == list(emb.shape) and r["frame_rate_hz"] == 50
    # the utterance scores are the pipeline's, whatever the granularity
    assert r["emotion"] == model.infer([load_mono_16k(recordings["mono16k"])])[0].emotion


def test_several_files_get_one_subfolder_each_and_a_bad_one_fails_alone(recordings, tiny_model_dir, tmp_path, capsys):
    code = _run(
        recordings["mono16k"], recordings["stereo44k"], recordings["broken"], out=tmp_path, model_dir=tiny_model_dir
    )
    assert code == 1
    p = _only_run(tmp_path)
    assert sorted(d.name for d in p.iterdir()) == ["call", "call_2"]  # two files named call.*
    names = {json.loads((p / d / "result.json").read_text())["audio_name"] for d in ("call", "call_2")}
    assert names == {"call.wav", "call.flac"}
    assert "broken.wav: FAILED" in capsys.readouterr().err


def test_no_embedding(recordings, tiny_model_dir, tmp_path):
    assert _run(recordings["mono16k"], "--no-embedding", out=tmp_path, model_dir=tiny_model_dir) == 0
    p = _only_run(tmp_path)
    assert sorted(f.name for f in p.iterdir()) == ["processed_audio.wav", "result.json"]
    assert "embedding_shape" not in json.loads((p / "result.json").read_text())


def test_run_folders_never_collide(tmp_path):
    now = dt.datetime(2026, 11, 20, 9, 5, 1)
    names = [analyze.run_folder(tmp_path, now).name for _ in range(3)]
    assert names == ["outputs_20261120_090501", "outputs_20261120_090501_2", "outputs_20261120_090501_3"]


def test_too_short_is_refused_with_the_minimum(model):
    with pytest.raises(analyze.AnalyzeError, match="too short"):
        analyze.analyze_waveform(model, np.zeros(100, np.float32), "tiny.wav")
