"""One recording, one embedding (Issue 13): whatever door a file enters — the pipeline, `emo analyze`,
`emo web`, `emo similar FILE` — the model hears the samples that are written out (the lake's FLAC,
processed_audio.wav), so every door gives the warehouse's vector, bit for bit.

The files are the kind where it matters: resampled, stereo, lossy, float louder than full scale (the
16-bit rounding and clipping change the samples), and one longer than the model's window, which the
pipeline scores window by window from its FLAC. Every test runs twice: with fixed windows, and with
speech turns (the default), where a recording's vector is the duration-weighted mean over the turns
silero-vad finds in the samples every door hears.
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.compute as pc
import pytest
import soundfile as sf

from emo_assets.assets import all_assets
from emo_assets.checks import all_checks
from emo_assets.cli import main
from emo_assets.lib.audio.load import load_mono_16k
from emo_assets.lib.audio.resample import resolve_paths
from emo_assets.lib.audio.sample_day import write_encoded
from emo_assets.lib.store import lake
from emo_assets.resources import EmotionModelResource, RayResource, StorageResource
from tests.helpers import failed_steps, spoken

DAY = "2026-11-20"
WINDOW_S = 4.0  # small, so that one recording is scored window by window
# name -> (codec, sample rate, channels, seconds, gain)
RECORDINGS = {
    "stereo_44k.flac": ("flac", 44100, 2, 2.0, 0.9),
    "mono_22k.mp3": ("mp3", 22050, 1, 3.0, 0.9),
    "loud_48k.wav": ("wav_float", 48000, 1, 2.5, 2.0),  # beyond full scale: clipped when stored
    "long_48k.m4a": ("aac", 48000, 1, 9.0, 0.9),  # > WINDOW_S: three windows
}


@pytest.fixture(scope="module", params=["windows", "turns"])
def segments(request) -> str:
    return request.param


def _emotion_model(model_dir: Path, segments: str) -> EmotionModelResource:
    return EmotionModelResource(model=str(model_dir), device="cpu", window_s=WINDOW_S, segments=segments)


@pytest.fixture(autouse=True)
def segments_setting(monkeypatch, segments):
    """The `emo` commands segment as the pipeline did (EMO_SEGMENTS)."""
    monkeypatch.setenv("EMO_SEGMENTS", segments)


def _speech(seconds: float, rate: int, seed: int, channels: int) -> np.ndarray:
    """Spoken sentences (the web page refuses a recording without speech), ``(channels, n)`` with
    peak 0.6; a second channel is the first, delayed 10 ms and softer."""
    mono = spoken(seconds, seed, rate)
    mono *= 0.6 / np.abs(mono).max()
    sides = [mono, 0.8 * np.roll(mono, rate // 100)][:channels]
    return np.stack(sides).astype(np.float32)


@pytest.fixture(scope="module")
def warehouse_day(tmp_path_factory, tiny_model_dir, segments):
    """The recordings run through the pipeline: (data dir, raw files, audio_id by name, lake vector by audio_id)."""
    data_dir = tmp_path_factory.mktemp("every_door")
    files = {}
    for i, (name, (codec, rate, channels, seconds, gain)) in enumerate(RECORDINGS.items()):
        samples = gain * _speech(seconds, rate, i, channels)
        files[name] = write_encoded(data_dir / "raw" / DAY / name, samples, rate, codec)
    result = dg.materialize(
        [*all_assets(), *all_checks],
        partition_key=DAY,
        resources={
            "storage": StorageResource(data_dir=str(data_dir)),
            "emotion_model": _emotion_model(tiny_model_dir, segments),
            "ray": RayResource(),
        },
        raise_on_error=False,
    )
    assert result.success, failed_steps(result)
    lake_dir = data_dir / "lake"
    audio_files = lake.read_partition(lake_dir, "audio_files", DAY)
    sources = audio_files.column("source_path").to_pylist()
    ids = {Path(src).name: audio_id for audio_id, src in zip(audio_files.column("audio_id").to_pylist(), sources)}
    embeddings = lake.read_partition(lake_dir, "emotion_embeddings", DAY)
    vectors = dict(zip(embeddings.column("audio_id").to_pylist(), lake.embedding_matrix(embeddings), strict=True))
    assert sorted(ids) == sorted(RECORDINGS) and sorted(vectors) == sorted(ids.values())
    scored = lake.read_partition(lake_dir, "emotion_segments", DAY)
    long_id = ids["long_48k.m4a"]
    long_rows = pc.sum(pc.equal(scored.column("audio_id"), long_id)).as_py()
    if segments == "windows":
        assert long_rows == 3  # scored window by window
    else:  # speech turns: rows of turns, silence left out; a turn longer than WINDOW_S is windowed
        assert long_rows >= 1 and pc.all(pc.is_valid(scored.column("turn"))).as_py()
    return data_dir, files, ids, vectors


def test_the_lake_flac_holds_what_load_mono_16k_gives(warehouse_day):
    data_dir, files, ids, _ = warehouse_day
    resampled = lake.read_partition(data_dir / "lake", "resampled_audio", DAY)
    flac_of = dict(
        zip(resampled.column("audio_id").to_pylist(), resolve_paths(resampled, data_dir)["path"].to_pylist())
    )
    for name, path in files.items():
        stored, sample_rate = sf.read(flac_of[ids[name]], dtype="float32")
        assert sample_rate == 16000
        np.testing.assert_array_equal(stored, load_mono_16k(path), err_msg=name)
    # the loud file really was clipped: the test covers the case where float and stored differ most
    assert np.abs(load_mono_16k(files["loud_48k.wav"])).max() >= 32767 / 32768


def test_emo_analyze_gives_the_warehouse_vector(warehouse_day, tiny_model_dir, tmp_path, monkeypatch):
    data_dir, files, ids, vectors = warehouse_day
    monkeypatch.setenv("EMO_WINDOW_S", str(WINDOW_S))
    resampled = lake.read_partition(data_dir / "lake", "resampled_audio", DAY)
    model_args = ["--model", str(tiny_model_dir), "--device", "cpu"]

    assert main(["analyze", *map(str, files.values()), "--out", str(tmp_path / "raw"), *model_args]) == 0
    [run] = (tmp_path / "raw").glob("outputs_*")
    for name in files:
        folder = run / Path(name).stem
        np.testing.assert_array_equal(np.load(folder / "embedding.npy")[0], vectors[ids[name]], err_msg=name)

    # the written-out audio is a door too: the exported WAV and the lake's FLAC give the same vector again
    flac_of = dict(
        zip(resampled.column("audio_id").to_pylist(), resolve_paths(resampled, data_dir)["path"].to_pylist())
    )
    for name in files:
        for n, written in enumerate([run / Path(name).stem / "processed_audio.wav", Path(flac_of[ids[name]])]):
            out = tmp_path / f"{Path(name).stem}_{n}"
            assert main(["analyze", str(written), "--out", str(out), *model_args]) == 0
            [again] = out.glob("outputs_*")
            np.testing.assert_array_equal(np.load(again / "embedding.npy")[0], vectors[ids[name]], err_msg=str(written))


def test_emo_similar_file_finds_itself_first_with_similarity_one(warehouse_day, tiny_model_dir, monkeypatch, capsys):
    from emo_assets.lib.analytics import nearest

    data_dir, files, ids, vectors = warehouse_day
    monkeypatch.setenv("EMO_WINDOW_S", str(WINDOW_S))
    queried = []
    real = nearest.similar_to_vector

    def spy(index_root, vector, *args, **kwargs):
        queried.append(np.asarray(vector, dtype=np.float32))
        return real(index_root, vector, *args, **kwargs)

    monkeypatch.setattr(nearest, "similar_to_vector", spy)
    for name, path in files.items():
        capsys.readouterr()
        args = ["similar", str(path), "-k", "4", "--json", "--data-dir", str(data_dir)]
        assert main([*args, "--model", str(tiny_model_dir), "--device", "cpu"]) == 0
        got = json.loads(capsys.readouterr().out)
        np.testing.assert_array_equal(queried[-1], vectors[ids[name]], err_msg=name)
        assert got[0]["audio_id"] == ids[name], name
        assert abs(got[0]["similarity"] - 1.0) <= 1e-6, (name, got[0]["similarity"])
        assert all(row["similarity"] < 1.0 - 1e-6 for row in got[1:]), name


class _Server:
    """`emo web`'s app served by uvicorn on a free port, in a thread, for the duration of a `with`."""

    def __init__(self, app):
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the web server did not start within 20 s")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _upload(url: str, path: Path) -> dict:
    boundary = "emo-every-door"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + path.read_bytes()
    body += f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="granularity"\r\n\r\nutterance\r\n'.encode()
    body += f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{url}/api/analyze",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_emo_web_upload_gives_the_warehouse_vector_and_finds_itself(warehouse_day, tiny_model_dir, segments):
    from emo_assets.web import create_app

    data_dir, files, ids, vectors = warehouse_day
    app = create_app(StorageResource(data_dir=str(data_dir)), _emotion_model(tiny_model_dir, segments))
    with _Server(app) as url:
        for name, path in files.items():
            shown = _upload(url, path)
            with urllib.request.urlopen(url + shown["downloads"]["embedding.npy"], timeout=30) as response:
                embedding = np.load(io.BytesIO(response.read()))
            np.testing.assert_array_equal(embedding[0], vectors[ids[name]], err_msg=name)
            with urllib.request.urlopen(url + shown["downloads"]["processed_audio.wav"], timeout=30) as response:
                heard, _ = sf.read(io.BytesIO(response.read()), dtype="float32")
            np.testing.assert_array_equal(heard, load_mono_16k(path), err_msg=name)
            first = shown["similar"][0]
            assert first["audio_id"] == ids[name] and abs(first["similarity"] - 1.0) <= 1e-6, (name, first)


def test_emo_similar_file_embeds_with_the_precision_asked_for(warehouse_day, tiny_model_dir, monkeypatch, segments):
    from emo_assets.lib.analytics import nearest

    data_dir, files, ids, vectors = warehouse_day
    monkeypatch.setenv("EMO_WINDOW_S", str(WINDOW_S))
    queried = []
    real = nearest.similar_to_vector
    monkeypatch.setattr(
        nearest,
        "similar_to_vector",
        lambda root, vector, *a, **kw: queried.append(vector) or real(root, vector, *a, **kw),
    )
    path = files["stereo_44k.flac"]
    args = ["similar", str(path), "--json", "--data-dir", str(data_dir), "--model", str(tiny_model_dir)]
    assert main([*args, "--device", "cpu", "--precision", "int8"]) == 0
    int8 = EmotionModelResource(
        model=str(tiny_model_dir), device="cpu", precision="int8", window_s=WINDOW_S, segments=segments
    ).load()
    if segments == "windows":
        np.testing.assert_array_equal(queried[-1], int8.infer([load_mono_16k(path)])[0].embedding)
    assert not np.array_equal(queried[-1], vectors[ids["stereo_44k.flac"]])  # the warehouse was run in fp32
