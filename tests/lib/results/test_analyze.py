"""`emo analyze`: the WebUI's outputs folder, checked against the model's own numbers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emo_assets.cli import main
from emo_assets.lib.audio.load import load_mono_16k
from emo_assets.lib.audio.sample_day import write_encoded
from emo_assets.lib.model.model_dir import EMOTION_TOKENS
from emo_assets.lib.results import analyze
from emo_assets.lib.schemas import EMOTION_LABELS
from tests.funasr_reference import funasr_auto_model


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


@pytest.fixture(autouse=True)
def whole_files(monkeypatch):
    """`emo analyze` scores the whole file in fixed windows here (EMO_SEGMENTS=windows), as funasr
    does; the tests of speech turns ask for them with --segments turns."""
    monkeypatch.setenv("EMO_SEGMENTS", "windows")


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
    # what the model heard, bit for bit, and the embedding is the one of exactly these samples
    assert sf.info(str(p / "processed_audio.wav")).subtype == "PCM_16"
    np.testing.assert_array_equal(audio, wav)
    np.testing.assert_array_equal(emb[0], expected.embedding)
    assert r["precision"] == "fp32"


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


@pytest.fixture(scope="module")
def funasr_model(tiny_model_dir):
    """funasr's own AutoModel on the same random weights (as tests/lib/model/ builds it)."""
    return funasr_auto_model(tiny_model_dir)


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> list[Path]:
    """Formats and rates where the 16-bit rounding matters: resampled, lossy, float, louder than full scale."""
    from emo_assets.lib.audio.sample_day import synth_speech

    folder = tmp_path_factory.mktemp("uploads")
    specs = [("flac", 44100, 2, ".flac"), ("mp3", 22050, 1, ".mp3"), ("wav_float", 48000, 1, ".wav")]
    return [
        write_encoded(
            folder / f"{codec}_{rate}{ext}",
            (2.0 if codec == "wav_float" else 0.9) * synth_speech(2.5, rate, np.random.default_rng(i), channels=ch),
            rate,
            codec,
        )
        for i, (codec, rate, ch, ext) in enumerate(specs)
    ]


def test_funasr_on_processed_audio_wav_reproduces_embedding_npy(uploads, model, funasr_model, tiny_model_dir, tmp_path):
    from emo_assets.lib.audio.decode import decode_audio
    from emo_assets.lib.audio.load import to_mono_16k

    assert _run(*uploads, out=tmp_path, model_dir=tiny_model_dir) == 0
    run = _only_run(tmp_path)
    for upload in uploads:
        folder = run / upload.stem
        emb = np.load(folder / "embedding.npy")[0]
        r = json.loads((folder / "result.json").read_text())
        (theirs,) = funasr_model.generate(
            str(folder / "processed_audio.wav"), granularity="utterance", extract_embedding=True
        )
        assert np.abs(np.asarray(theirs["feats"]) - emb).max() < 1e-4, upload.name
        funasr_scores = dict(zip(theirs["labels"], theirs["scores"]))
        ours = [r["scores"][label] for label in EMOTION_LABELS]
        np.testing.assert_allclose(ours, [funasr_scores[token] for token in EMOTION_TOKENS], atol=1e-5)

        # the test can fail: the float audio (what `emo analyze` used to embed) is not what the WAV holds
        floats = model.infer([to_mono_16k(*decode_audio(upload))])[0].embedding
        assert np.abs(np.asarray(theirs["feats"]) - floats).max() > 1e-4, upload.name


def test_analyzing_processed_audio_wav_again_gives_the_same_embedding(uploads, tiny_model_dir, tmp_path):
    assert _run(uploads[0], out=tmp_path / "first", model_dir=tiny_model_dir) == 0
    first = _only_run(tmp_path / "first")
    assert _run(first / "processed_audio.wav", out=tmp_path / "again", model_dir=tiny_model_dir) == 0
    again = _only_run(tmp_path / "again")

    np.testing.assert_array_equal(np.load(again / "embedding.npy"), np.load(first / "embedding.npy"))
    assert (again / "processed_audio.wav").read_bytes() == (first / "processed_audio.wav").read_bytes()


def test_precision_reaches_the_model_and_result_json(uploads, model, tiny_model_dir, tmp_path, monkeypatch):
    from emo_assets.resources import EmotionModelResource

    monkeypatch.setenv("EMO_PRECISION", "fp32")  # the option wins over the environment
    code = main(
        ["analyze", str(uploads[1]), "--out", str(tmp_path), "--model", str(tiny_model_dir), "--device", "cpu"]
        + ["--precision", "int8"]
    )
    assert code == 0
    p = _only_run(tmp_path)
    int8 = EmotionModelResource(model=str(tiny_model_dir), device="cpu", precision="int8").load()
    wav = load_mono_16k(uploads[1])
    np.testing.assert_array_equal(np.load(p / "embedding.npy")[0], int8.infer([wav])[0].embedding)
    assert not np.array_equal(np.load(p / "embedding.npy")[0], model.infer([wav])[0].embedding)
    assert json.loads((p / "result.json").read_text())["precision"] == "int8"


def test_a_bad_precision_is_refused_with_the_choices(uploads, tiny_model_dir, tmp_path, capsys):
    code = main(
        ["analyze", str(uploads[0]), "--out", str(tmp_path), "--model", str(tiny_model_dir), "--device", "cpu"]
        + ["--precision", "int4"]
    )
    assert code == 2
    assert "int4" in capsys.readouterr().err and not list(tmp_path.glob("outputs_*"))


def test_analyze_by_speech_turns_lists_the_turns_and_refuses_silence(model, tiny_model_dir, tmp_path, capsys):
    from emo_assets.lib.audio.load import write_wav_atomic
    from tests.helpers import spoken_with_pauses

    speech, spans = spoken_with_pauses()
    call = write_wav_atomic(tmp_path / "call.wav", speech)
    quiet = write_wav_atomic(tmp_path / "quiet.wav", np.zeros(32000, np.float32))
    out = tmp_path / "out"
    assert _run(call, "--segments", "turns", out=out, model_dir=tiny_model_dir) == 0
    result = json.loads((_only_run(out) / analyze.RESULT_JSON).read_text(encoding="utf-8"))
    assert result["segments"] == "turns" and [t["turn"] for t in result["turns"]] == [0, 1, 2]
    assert result["arc"]["turns"] == 3  # the emotion arc over the speech turns
    assert result["arc"]["start_emotion"] == result["turns"][0]["emotion"]
    for turn, (start, end) in zip(result["turns"], spans, strict=True):
        assert abs(turn["start_s"] - start) <= 0.3 and abs(turn["end_s"] - end) <= 0.3
    # the scores are the duration-weighted mean of the turns, each scored as a clip of its own
    wav = load_mono_16k(call)
    clips = [wav[round(t["start_s"] * 16000) : round(t["end_s"] * 16000)] for t in result["turns"]]
    expected = model.infer(clips)
    weights = np.array([len(c) for c in clips], np.float64)
    mean = (weights[:, None] * np.stack([r.scores for r in expected])).sum(0) / weights.sum()
    np.testing.assert_allclose([result["scores"][label] for label in EMOTION_LABELS], mean, atol=1e-5)
    capsys.readouterr()
    assert _run(quiet, "--segments", "turns", out=tmp_path / "q", model_dir=tiny_model_dir) == 1
    assert "no speech" in capsys.readouterr().err


def test_analyze_a_two_channel_call_side_by_side(model, tiny_model_dir, tmp_path, capsys):
    from tests.helpers import stereo_conversation

    stereo, spans = stereo_conversation()
    call = tmp_path / "call.wav"
    sf.write(call, stereo, 16000, subtype="PCM_16")
    out = tmp_path / "out"
    args = ["--channels", "agent=left,customer=right", "--segments", "turns"]
    assert _run(call, *args, out=out, model_dir=tiny_model_dir) == 0
    run = _only_run(out)
    for voice in ("agent", "customer"):
        result = json.loads((run / voice / analyze.RESULT_JSON).read_text(encoding="utf-8"))
        assert result["audio_name"] == f"call.wav [{voice}]"
        found = [(t["start_s"], t["end_s"]) for t in result["turns"]]
        assert len(found) == len(spans[voice])
        for (s, e), (es, ee) in zip(found, spans[voice], strict=True):
            assert abs(s - es) <= 0.3 and abs(e - ee) <= 0.3
        heard = load_mono_16k(run / voice / analyze.PROCESSED_WAV)
        side = stereo[:, 0 if voice == "agent" else 1]
        np.testing.assert_allclose(heard, side, atol=1 / 32768)  # that side alone, not the mix
    capsys.readouterr()
    assert _run(call, "--channels", "caller=left", out=out, model_dir=tiny_model_dir) == 2
    assert "unknown voice 'caller'" in capsys.readouterr().err


def test_long_recording_result_has_its_emotion_arc(tiny_model_dir, tmp_path):
    """`emo analyze` on a recording of several windows: result.json carries the arc of those windows."""
    from emo_assets.lib.analytics.arc import Turn, emotion_arc
    from emo_assets.resources import EmotionModelResource

    scorer = EmotionModelResource(model=str(tiny_model_dir), device="cpu", window_s=2.5).load()
    wav = (np.random.default_rng(9).standard_normal(16000 * 7) * 0.1).astype(np.float32)
    analysis = analyze.analyze_waveform(scorer, wav, "long.wav")
    assert len(analysis.segments) >= 3
    written = json.loads((analyze.write_analysis(analysis, wav, tmp_path / "out") / "result.json").read_text())
    turns = [Turn(i, s.start_s, s.end_s, tuple(float(v) for v in s.scores)) for i, s in enumerate(analysis.segments)]
    expected = emotion_arc(turns)
    assert written["arc"]["turns"] == len(analysis.segments)
    assert written["arc"]["peak_turn"] == expected.peak_turn
    assert written["arc"]["start_emotion"] == expected.start_emotion
    assert written["arc"]["end_emotion"] == expected.end_emotion
    # one window is an arc too, as call_emotion_arc has a row for it
    short = analyze.analyze_waveform(scorer, wav[:16000], "short.wav")
    (window,) = short.segments
    one = emotion_arc([Turn(0, window.start_s, window.end_s, tuple(float(v) for v in window.scores))])
    assert short.result()["arc"] == dataclasses.asdict(one)
    assert short.result()["arc"]["turns"] == 1
