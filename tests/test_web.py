"""`emo web` in a real headless browser: upload a file, see the emotions, download result.json.

The browser is Debian's chromium driven by Playwright (Playwright's own browser download does not
work offline). The session fixture installs chromium with apt-get when it is missing and we are
root; the test is skipped, with the reason, only when no browser can be installed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from emo_assets.lib import schemas
from emo_assets.lib.analytics import nearest
from emo_assets.lib.audio.sample_day import write_encoded
from emo_assets.lib.model.score_rows import score_rows, segment_row
from emo_assets.lib.store import lake
from tests.helpers import spoken

DAY = "2026-11-20"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
WEB_DEPS = ["playwright==1.65.2", "fastapi==0.165.0", "python-multipart==0.0.34", "uvicorn==0.54.0"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a chromium Playwright can launch; installs Debian's package and the Python deps if needed."""
    path = shutil.which("chromium") or CHROMIUM
    if not Path(path).exists():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip(f"no chromium at {CHROMIUM} and not root with apt-get to install it: apt-get install chromium")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], env=env, timeout=900, capture_output=True, text=True
        )
        if done.returncode != 0 or not Path(CHROMIUM).exists():
            pytest.skip(f"chromium could not be installed with apt-get: {done.stderr.strip()[-300:]}")
        path = CHROMIUM
    try:
        import fastapi  # noqa: F401
        import playwright  # noqa: F401
        import python_multipart  # noqa: F401
    except ImportError:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", *WEB_DEPS], capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            pytest.skip(f"the web test's Python packages could not be installed: {done.stderr.strip()[-300:]}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_lake(data_dir: Path, model, recordings: dict[str, np.ndarray]) -> dict[str, str]:
    """Score ``recordings`` with ``model`` and write one lake day; returns name -> audio_id."""
    date = dt.date.fromisoformat(DAY)
    names = sorted(recordings)
    ids = {name: f"id_{Path(name).stem}" for name in names}
    results = model.infer([recordings[n] for n in names])
    lake_dir = data_dir / "lake"
    scores = [score_rows(ids[n], date, model.model_id, r.scores) for n, r in zip(names, results)]
    lake.write_partition(lake_dir, "emotion_scores", DAY, pa.Table.from_pylist(scores, schema=schemas.EMOTION_SCORES))
    segments = [
        segment_row(ids[n], date, model.model_id, seg.start_s, seg.end_s, seg.scores, turn=i)
        for n, r in zip(names, results)
        for i, seg in enumerate(r.segments)
    ]
    lake.write_partition(
        lake_dir, "emotion_segments", DAY, pa.Table.from_pylist(segments, schema=schemas.EMOTION_SEGMENTS)
    )
    emb = np.stack([r.embedding for r in results]).astype(np.float32)
    lake.write_partition(
        lake_dir,
        "emotion_embeddings",
        DAY,
        pa.table(
            {
                "audio_id": [ids[n] for n in names],
                "date": pa.array([date] * len(names), pa.date32()),
                "model_id": [model.model_id] * len(names),
                "channel": ["mono"] * len(names),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1]),
            },
            schema=schemas.emotion_embeddings_schema(emb.shape[1]),
        ),
    )
    lake.write_partition(
        lake_dir,
        "audio_files",
        DAY,
        pa.Table.from_pylist(
            [
                {
                    "audio_id": ids[n],
                    "source_path": f"{DAY}/{n}",
                    "size_bytes": 1,
                    "format": "wav",
                    "sample_rate": 16000,
                    "channels": 1,
                    "duration_s": len(recordings[n]) / 16000,
                    "ingested_at": dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
                    "date": date,
                }
                for n in names
            ],
            schema=schemas.AUDIO_FILES,
        ),
    )
    nearest.index_day(lake_dir, data_dir / "similarity", DAY)  # what the similarity_index asset does
    return ids


@contextlib.contextmanager
def _serving(data_dir: Path, emotion_model):
    """`emo web`'s app for ``data_dir`` on a free port, in a thread; yields its URL."""
    import uvicorn

    from emo_assets.resources import StorageResource
    from emo_assets.web import create_app

    storage = StorageResource(data_dir=str(data_dir))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(storage, emotion_model), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the web server did not start within 20 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _recordings_on_disk(data_dir: Path, recordings: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for name, wav in recordings.items():
        write_encoded(data_dir / "raw" / name, wav, 16000, "wav_pcm_16")
    return {n: _decoded(data_dir / "raw" / n) for n in recordings}


@pytest.fixture(scope="module")
def web_server(tmp_path_factory, tiny_model_dir, chromium):
    from emo_assets.resources import EmotionModelResource

    data_dir = tmp_path_factory.mktemp("web_data")
    recordings = {f"call_{i}.wav": spoken(1.0 + 0.25 * i, seed=i) for i in range(4)}
    # scored whole in fixed windows (the speech-turn upload has its own test)
    emotion_model = EmotionModelResource(model=str(tiny_model_dir), device="cpu", segments="windows")
    model = emotion_model.load()
    ids = _write_lake(data_dir, model, _recordings_on_disk(data_dir, recordings))
    with _serving(data_dir, emotion_model) as url:
        yield url, data_dir, model, ids


class _GatedModel:
    """The test model (an EmotionModelResource) whose weights load only once ``gate`` is open, so
    the test can see the page while the model is still loading."""

    def __init__(self, resource, gate: threading.Event) -> None:
        self.resource, self.gate = resource, gate
        self.model, self.precision, self.speech_turns = resource.model, resource.precision, resource.speech_turns

    def load(self):
        from emo_assets.lib.model.loading import LazyEmotionModel

        described = self.resource.load()

        def load_when_opened():
            if not self.gate.wait(120):
                raise RuntimeError("the test never let the model load")
            return described.loaded()

        return LazyEmotionModel(described.description, load_when_opened)


LONG_S, LONG_WINDOW_S = 8.0, 2.5  # a small window (EMO_WINDOW_S): the 8 s recording is several windows


@pytest.fixture(scope="module")
def gated_server(tmp_path_factory, tiny_model_dir, chromium):
    """A server with a 2.5 s window whose model loads when the test opens the gate; the lake holds an
    8 s recording (several windows, so several ``emotion_segments`` rows) and a short one."""
    from emo_assets.resources import EmotionModelResource

    data_dir = tmp_path_factory.mktemp("web_long")
    recordings = {"long_call.wav": spoken(LONG_S, seed=5), "short_call.wav": spoken(1.0, seed=6)}
    resource = EmotionModelResource(model=str(tiny_model_dir), device="cpu", window_s=LONG_WINDOW_S, segments="windows")
    model = resource.load()
    ids = _write_lake(data_dir, model, _recordings_on_disk(data_dir, recordings))
    gate = threading.Event()
    with _serving(data_dir, _GatedModel(resource, gate)) as url:
        yield url, data_dir, model, ids, gate
    gate.set()


def _decoded(path: Path) -> np.ndarray:
    from emo_assets.lib.audio.load import load_mono_16k

    return load_mono_16k(path)


def _browser(playwright, chromium: str):
    return playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)


def _show_warehouse_recording(page, url: str, audio_id: str) -> None:
    """Open the page, pick ``audio_id`` from the warehouse's recordings and wait for its result."""
    page.goto(url)
    page.wait_for_selector(f"#recording option[value='{audio_id}']", state="attached")
    page.select_option("#recording", audio_id)
    page.click("#show")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)


def test_upload_shows_emotions_and_downloads_result_json(web_server, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    url, data_dir, model, ids = web_server
    upload = data_dir / "raw" / "call_2.wav"
    expected = model.infer([_decoded(upload)])[0]
    with sync_playwright() as p:
        browser = _browser(p, chromium)
        try:
            page = browser.new_page()
            page.goto(url)
            page.set_input_files("#file", str(upload))
            page.click("#analyze")
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)

            assert page.inner_text("#emotion") == f"{_emoji(expected.emotion)} {expected.emotion}"
            assert float(page.inner_text("#confidence")) == pytest.approx(expected.confidence, abs=1e-3)
            bars = page.query_selector_all("#bars .bar")
            assert [b.get_attribute("data-label") for b in bars] == list(schemas.EMOTION_LABELS)
            shown = [float(b.query_selector(".value").inner_text()) for b in bars]
            np.testing.assert_allclose(shown, expected.scores, atol=1e-3)
            assert page.inner_text("#bars").count("😠") == 1 and "❓ unknown" in page.inner_text("#bars")
            assert page.is_visible("#random-warning") and "RANDOM weights" in page.inner_text("#random-warning")
            assert page.get_attribute("#player", "src").endswith("/processed_audio.wav")
            assert not page.is_visible("#timeline")  # one window: no timeline

            # the uploaded file is in the warehouse: it is its own nearest neighbour
            rows = page.query_selector_all("#similar tbody tr")
            assert len(rows) == 4
            first = [td.inner_text() for td in rows[0].query_selector_all("td")]
            assert first[0] == "1" and float(first[1]) == pytest.approx(1.0, abs=1e-3)
            assert first[2] == f"{DAY}/call_2.wav"

            with page.expect_download() as download_info:
                page.click("#download-json")
            saved = tmp_path / "result.json"
            download_info.value.save_as(saved)
            result = json.loads(saved.read_text(encoding="utf-8"))
            assert result["emotion"] == expected.emotion and result["audio_name"] == "call_2.wav"
            assert result["confidence"] == pytest.approx(expected.confidence, rel=1e-6)
            assert list(result["scores"]) == list(schemas.EMOTION_LABELS)
            assert result["precision"] == "fp32"

            with page.expect_download() as npy_info:
                page.click("#download-npy")
            npy_info.value.save_as(tmp_path / "embedding.npy")
            np.testing.assert_allclose(np.load(tmp_path / "embedding.npy"), expected.embedding[None, :], rtol=1e-5)
        finally:
            browser.close()


def test_pick_a_recording_from_the_warehouse(web_server, chromium):
    from playwright.sync_api import sync_playwright

    url, data_dir, model, ids = web_server
    expected = model.infer([_decoded(data_dir / "raw" / "call_0.wav")])[0]
    with sync_playwright() as p:
        browser = _browser(p, chromium)
        try:
            page = browser.new_page()
            _show_warehouse_recording(page, url, ids["call_0.wav"])
            assert page.inner_text("#emotion").endswith(expected.emotion)
            rows = page.query_selector_all("#similar tbody tr")
            # the recording itself is left out of its neighbours
            assert len(rows) == 3
            assert all("call_0.wav" not in r.inner_text() for r in rows)
        finally:
            browser.close()


def _multipart(path: Path) -> tuple[bytes, dict]:
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="' + path.name.encode() + b'"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + path.read_bytes() + b"\r\n--B--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=B"}


def test_page_says_when_the_model_is_ready_and_an_upload_waits_for_it(gated_server, chromium, tmp_path):
    import urllib.request

    from playwright.sync_api import expect, sync_playwright

    url, data_dir, model, ids, gate = gated_server
    if gate.is_set():
        pytest.skip("the gated model was already let load by an earlier test")  # pytest runs this one first
    status = json.loads(urllib.request.urlopen(f"{url}/api/status", timeout=10).read())
    assert status["state"] == "loading" and status["model_id"] == model.model_id

    upload = data_dir / "raw" / "short_call.wav"
    answered: dict = {}

    def post() -> None:
        body, headers = _multipart(upload)
        request = urllib.request.Request(f"{url}/api/analyze", data=body, method="POST", headers=headers)
        with urllib.request.urlopen(request, timeout=120) as resp:
            answered.update(code=resp.status, body=json.loads(resp.read()), at=time.monotonic())

    with sync_playwright() as p:
        browser = _browser(p, chromium)
        try:
            page = browser.new_page()
            page.goto(url)
            expect(page.locator("#model-status")).to_contain_text("Model loading")
            expect(page.locator("#model-status")).to_contain_text(model.model_id)
            expect(page.locator("#analyze")).to_be_disabled()
            page.screenshot(path=str(tmp_path / "web_loading.png"), full_page=True)

            poster = threading.Thread(target=post, daemon=True)
            poster.start()
            time.sleep(1.5)
            assert poster.is_alive() and not answered, "an upload while the model loads must wait for it"
            opened = time.monotonic()
            gate.set()
            poster.join(timeout=60)
            assert answered["code"] == 200 and answered["at"] >= opened
            assert answered["body"]["result"]["emotion"] == model.infer([_decoded(upload)])[0].emotion

            # the page polls /api/status: the banner turns to ready and the button is enabled
            expect(page.locator("#model-status")).to_have_class("ready", timeout=10_000)
            expect(page.locator("#model-status")).to_contain_text("Model ready")
            expect(page.locator("#model-status")).to_contain_text("RANDOM weights")
            expect(page.locator("#analyze")).to_be_enabled()
        finally:
            browser.close()
    status = json.loads(urllib.request.urlopen(f"{url}/api/status", timeout=10).read())
    assert status["state"] == "ready" and status["random_weights"] is True and status["load_s"] >= 1.5


def test_long_upload_has_warning_player_and_timeline(gated_server, chromium, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, data_dir, model, ids, gate = gated_server
    gate.set()
    upload = data_dir / "raw" / "long_call.wav"
    expected = model.infer([_decoded(upload)])[0]
    assert len(expected.segments) >= 3  # 8 s in 2.5 s windows (1 s overlap)
    with sync_playwright() as p:
        browser = _browser(p, chromium)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(url)
            expect(page.locator("#analyze")).to_be_enabled(timeout=30_000)
            page.set_input_files("#file", str(upload))
            page.click("#analyze")
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)

            warning = page.locator("#random-warning")
            expect(warning).to_be_visible()
            expect(warning).to_contain_text("RANDOM weights")

            player = page.locator("audio#player[controls]")
            expect(player).to_be_visible()
            src = player.get_attribute("src")
            assert src and src.endswith("/processed_audio.wav")
            wav = page.request.get(url + src)
            assert wav.status == 200 and wav.headers["content-type"] == "audio/wav"
            assert wav.body()[:4] == b"RIFF" and wav.body()[8:12] == b"WAVE"
            # the browser decodes it: its duration is the recording's
            page.wait_for_function("document.getElementById('player').readyState >= 1", timeout=10_000)
            assert page.evaluate("document.getElementById('player').duration") == pytest.approx(LONG_S, abs=0.01)

            expect(page.locator("#timeline")).to_be_visible()
            rects = page.locator("#timeline svg rect.segment")
            expect(rects).to_have_count(len(expected.segments))
            shown = [(float(r.get_attribute("data-start")), r.get_attribute("data-emotion")) for r in rects.all()]
            wanted = [(seg.start_s, schemas.EMOTION_LABELS[int(np.argmax(seg.scores))]) for seg in expected.segments]
            assert [e for _, e in shown] == [e for _, e in wanted]
            np.testing.assert_allclose([t for t, _ in shown], [t for t, _ in wanted], atol=1e-3)
            page.screenshot(path=str(tmp_path / "web_long_upload.png"), full_page=True)
        finally:
            browser.close()


def test_warehouse_recording_shows_its_emotion_segments(gated_server, chromium, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from emo_assets.lib.store import lake as lake_store

    url, data_dir, model, ids, gate = gated_server
    gate.set()
    rows = lake_store.read_table(data_dir / "lake", "emotion_segments").to_pylist()
    long_rows = sorted((r for r in rows if r["audio_id"] == ids["long_call.wav"]), key=lambda r: r["start_s"])
    assert len(long_rows) >= 3
    with sync_playwright() as p:
        browser = _browser(p, chromium)
        try:
            page = browser.new_page()
            _show_warehouse_recording(page, url, ids["long_call.wav"])
            rects = page.locator("#timeline svg rect.segment")
            expect(rects).to_have_count(len(long_rows))
            assert [r.get_attribute("data-emotion") for r in rects.all()] == [r["emotion"] for r in long_rows]
            # scored by the served (random) model: the warning is on this result too
            expect(page.locator("#random-warning")).to_be_visible()
            # a warehouse pick has no processed audio: no player
            expect(page.locator("#player")).to_be_hidden()

            # a one-window recording has no timeline
            page.select_option("#recording", ids["short_call.wav"])
            page.click("#show")
            expect(page.locator("#emotion")).to_have_text(
                _emoji(next(r["emotion"] for r in rows if r["audio_id"] == ids["short_call.wav"]))
                + " "
                + next(r["emotion"] for r in rows if r["audio_id"] == ids["short_call.wav"])
            )
            expect(page.locator("#timeline")).to_be_hidden()
        finally:
            browser.close()


def test_a_model_that_fails_to_load_is_reported_not_waited_on(tmp_path, tiny_model_dir, chromium):
    import urllib.error
    import urllib.request

    from emo_assets.lib.model.loading import LazyEmotionModel
    from emo_assets.resources import EmotionModelResource

    class BrokenWeights:
        def __init__(self, resource) -> None:
            self.resource, self.model, self.precision = resource, resource.model, resource.precision

        def load(self):
            def fail():
                raise OSError("model.pt: truncated file")

            return LazyEmotionModel(self.resource.load().description, fail)

    upload = tmp_path / "raw" / "a.wav"
    write_encoded(upload, spoken(1.0, seed=1), 16000, "wav_pcm_16")
    with _serving(
        tmp_path, BrokenWeights(EmotionModelResource(model=str(tiny_model_dir), device="cpu", segments="windows"))
    ) as url:
        deadline = time.monotonic() + 20
        while (status := json.loads(urllib.request.urlopen(f"{url}/api/status", timeout=10).read()))[
            "state"
        ] == "loading":
            assert time.monotonic() < deadline, "the failed load was never reported"
            time.sleep(0.05)
        assert status["state"] == "failed" and "model.pt: truncated file" in status["error"]
        body, headers = _multipart(upload)
        request = urllib.request.Request(f"{url}/api/analyze", data=body, method="POST", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 503
        assert "could not be loaded" in json.loads(refused.value.read())["detail"]


def test_undecodable_upload_is_refused_with_a_reason(web_server):
    import urllib.error
    import urllib.request

    url, *_ = web_server
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="notes.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nnot audio at all\r\n--B--\r\n"
    )
    request = urllib.request.Request(
        f"{url}/api/analyze", data=body, method="POST", headers={"Content-Type": "multipart/form-data; boundary=B"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 400
    assert "notes.wav" in json.loads(refused.value.read())["detail"]


def _upload_json(url: str, path: Path) -> dict:
    import urllib.request

    body = (
        (
            f'--B\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + b"\r\n--B--\r\n"
    )
    request = urllib.request.Request(
        f"{url}/api/analyze", data=body, method="POST", headers={"Content-Type": "multipart/form-data; boundary=B"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_an_upload_that_cannot_be_compared_with_the_warehouse_says_why(web_server, monkeypatch):
    """The result is shown, with no neighbours and the reason: a model of another width than the
    warehouse's embeddings (serve the page with the warehouse's model)."""
    from emo_assets.lib.store import warehouse

    url, data_dir, model, _ = web_server
    shown = _upload_json(url, data_dir / "raw" / "call_1.wav")
    assert shown["similar"] and shown["similar_note"] == ""
    monkeypatch.setattr(warehouse, "embedding_width", lambda con: model.embed_dim + 1)  # another model's width
    shown = _upload_json(url, data_dir / "raw" / "call_1.wav")
    assert shown["result"]["emotion"] and shown["similar"] == []
    assert (
        f"gives {model.embed_dim}-d embeddings and the warehouse holds {model.embed_dim + 1}-d" in shown["similar_note"]
    )


def test_emo_web_takes_model_device_and_precision_like_the_pipeline(tmp_path, monkeypatch):
    import emo_assets.web
    from emo_assets.cli import main

    served = {}

    def serve(storage, emotion_model, host, port):
        served.update(emotion_model=emotion_model, port=port)
        return 0

    monkeypatch.setattr(emo_assets.web, "serve", serve)
    monkeypatch.setenv("EMO_PRECISION", "fp32")  # the option wins over the environment
    monkeypatch.setenv("EMO_DEVICE", "auto")
    args = ["web", "--model", "some/model", "--device", "cpu", "--precision", "int8", "--data-dir", str(tmp_path)]
    assert main([*args, "--port", "7861"]) == 0
    model = served["emotion_model"]
    assert (model.model, model.device, model.precision, served["port"]) == ("some/model", "cpu", "int8", 7861)

    monkeypatch.setenv("EMO_PRECISION", "int8")
    assert main(["web", "--data-dir", str(tmp_path)]) == 0
    assert served["emotion_model"].precision == "int8"  # EMO_PRECISION, as for `emo run`


def _emoji(emotion: str) -> str:
    from emo_assets.lib.results.analyze import EMOJI

    return EMOJI[emotion]


def test_the_page_arc_is_the_servers_and_negative_is_decided_on_the_scores():
    """The page prints the arc's words as the server makes them (lib/analytics/arc.py): a surprised
    peak that is mostly negative is one to recover from, a neutral-topped turn that is not mostly
    calm is no recovery; a voice of one turn has an arc, as call_emotion_arc has a row for it."""
    from emo_assets.lib.analytics.arc import Turn
    from emo_assets.web import _arc

    def scores(**named):
        return tuple(named.get(e, 0.0) for e in schemas.EMOTION_LABELS)

    turns = [
        Turn(0, 0.0, 2.0, scores(neutral=0.8, other=0.2)),
        Turn(1, 2.0, 4.0, scores(surprised=0.45, angry=0.3, sad=0.25)),
        Turn(2, 4.0, 6.0, scores(neutral=0.4, happy=0.05, sad=0.3, other=0.25)),
        Turn(3, 7.0, 9.0, scores(happy=0.8, other=0.2)),
    ]
    arc = _arc(turns)
    assert (arc["peak_turn"], arc["recovered"], arc["recovery_turn"]) == (1, True, 3)
    assert arc["text"].endswith(
        f"most negative: {_emoji('surprised')} surprised at 2.0–4.0 s (negativity 0.55), "
        "calm again 5.0 s after it started · did not end calmer"
    )
    one = _arc(turns[1:2])
    assert (one["turns"], one["recovered"]) == (1, False)
    assert _arc([]) is None


def test_timeline_shows_the_emotion_arc(gated_server, chromium, tmp_path):
    """The arc under the timeline: start and end emotion, the most negative window outlined, the
    recovery, as lib/analytics/arc.py computes them from the recording's emotion_segments rows."""
    from playwright.sync_api import expect, sync_playwright

    from emo_assets.lib.analytics.arc import arc_rows, arc_sentence
    from emo_assets.lib.store import lake as lake_store

    url, data_dir, model, ids, gate = gated_server
    gate.set()
    segments = lake_store.read_table(data_dir / "lake", "emotion_segments")
    (arc,) = [a for a in arc_rows(segments).to_pylist() if a["audio_id"] == ids["long_call.wav"]]
    with sync_playwright() as p:
        browser = _browser(p, chromium)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector(f"#recording option[value='{ids['long_call.wav']}']", state="attached")
            page.select_option("#recording", ids["long_call.wav"])
            page.click("#show")
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            shown = page.locator("#arc")
            expect(shown).to_be_visible()
            expect(shown).to_contain_text(f"{arc['start_emotion']} → ")
            expect(shown).to_contain_text(f"most negative: {_emoji(arc['peak_emotion'])} {arc['peak_emotion']}")
            expect(shown).to_contain_text(f"at {arc['peak_start_s']:.1f}–{arc['peak_end_s']:.1f} s")
            # the words `emo report` prints, from the arc the server computed
            expect(shown).to_have_text(arc_sentence(arc, name=lambda e: f"{_emoji(e)} {e}"))
            assert shown.get_attribute("data-start") == arc["start_emotion"]
            assert shown.get_attribute("data-end") == arc["end_emotion"]
            assert (
                shown.get_attribute("data-recovered") == {None: "null", True: "true", False: "false"}[arc["recovered"]]
            )
            assert (
                shown.get_attribute("data-calmer") == {None: "null", True: "true", False: "false"}[arc["ended_calmer"]]
            )
            peak = page.locator("#timeline svg rect.segment.peak")
            expect(peak).to_have_count(1)
            assert peak.get_attribute("data-turn") == str(arc["peak_turn"])
            assert float(peak.get_attribute("data-start")) == pytest.approx(arc["peak_start_s"], abs=1e-3)
            page.screenshot(path=str(tmp_path / "web_arc.png"), full_page=True)

            # one window: no timeline, but an arc of one turn, as call_emotion_arc has a row for it
            (one,) = [a for a in arc_rows(segments).to_pylist() if a["audio_id"] == ids["short_call.wav"]]
            assert one["turns"] == 1
            page.select_option("#recording", ids["short_call.wav"])
            page.click("#show")
            expect(page.locator("#timeline")).to_be_hidden()
            expect(page.locator("#arc")).to_have_text(arc_sentence(one, name=lambda e: f"{_emoji(e)} {e}"))
            expect(page.locator("#arc")).to_be_visible()
        finally:
            browser.close()


def test_a_two_channel_call_shows_each_side_with_its_own_arc(tmp_path, tiny_model_dir, chromium):
    """A stereo call under a channels.toml, through the pipeline: the page shows the customer's side
    (the one its scores are) in the timeline and the agent's side below it, each with its own arc."""
    import urllib.request

    import dagster as dg
    import soundfile as sf
    from playwright.sync_api import expect, sync_playwright

    from emo_assets.assets import all_assets
    from emo_assets.checks import all_checks
    from emo_assets.lib.analytics.arc import arc_rows
    from emo_assets.lib.audio.sample_day import synth_speech
    from emo_assets.resources import EmotionModelResource
    from tests.helpers import resources

    data_dir = tmp_path / "data"
    day_dir = data_dir / "raw" / DAY
    day_dir.mkdir(parents=True)
    sides = [synth_speech(6.0, 16000, np.random.default_rng([11, side])).reshape(-1) for side in (0, 1)]
    sf.write(day_dir / "call.wav", np.stack(sides, axis=1), 16000, subtype="PCM_16")
    (day_dir / "channels.toml").write_text('[channels]\nagent = "left"\ncustomer = "right"\n')
    emotion_model = EmotionModelResource(
        model=str(tiny_model_dir), device="cpu", window_s=LONG_WINDOW_S, segments="windows"
    )
    res = {**resources(data_dir, tiny_model_dir), "emotion_model": emotion_model}
    result = dg.materialize([*all_assets(), *all_checks], partition_key=DAY, resources=res, raise_on_error=False)
    assert result.success
    (call,) = set(lake.read_partition(data_dir / "lake", "audio_files", DAY).column("audio_id").to_pylist())
    segments = lake.read_partition(data_dir / "lake", "emotion_segments", DAY)
    arcs = {a["channel"]: a for a in arc_rows(segments).to_pylist()}
    count = {c: segments.column("channel").to_pylist().count(c) for c in ("agent", "customer")}
    assert count["agent"] >= 2 and count["customer"] >= 2

    with _serving(data_dir, emotion_model) as url:
        with urllib.request.urlopen(f"{url}/api/recording/{call}", timeout=60) as response:
            shown = json.load(response)
        assert shown["channel"] == "customer" and len(shown["segments"]) == count["customer"]
        assert shown["arc"]["peak_turn"] == arcs["customer"]["peak_turn"]
        (agent,) = shown["other_voices"]
        assert agent["channel"] == "agent" and len(agent["segments"]) == count["agent"]
        assert agent["arc"]["start_emotion"] == arcs["agent"]["start_emotion"]
        assert agent["arc"]["peak_turn"] == arcs["agent"]["peak_turn"]
        with sync_playwright() as p:
            browser = _browser(p, chromium)
            try:
                page = browser.new_page()
                _show_warehouse_recording(page, url, call)
                expect(page.locator("#timeline h3")).to_have_text("Emotion timeline (customer)")
                expect(page.locator("#timeline svg rect.segment")).to_have_count(count["customer"])
                side = page.locator("#voices .voice[data-channel='agent']")
                expect(side.locator("svg rect.segment")).to_have_count(count["agent"])
                expect(side.locator("svg rect.segment.peak")).to_have_count(1)
                expect(side.locator(".voice-arc")).to_contain_text(
                    f"most negative: {_emoji(arcs['agent']['peak_emotion'])} {arcs['agent']['peak_emotion']}"
                )
            finally:
                browser.close()
