"""`emo web` in a real headless browser: upload a file, see the emotions, download result.json.

The browser is Debian's chromium driven by Playwright (Playwright's own browser download does not
work offline). The session fixture installs chromium with apt-get when it is missing and we are
root; the test is skipped, with the reason, only when no browser can be installed.
"""

from __future__ import annotations

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
from emo_assets.lib.model.scoring import score_rows
from emo_assets.lib.store import lake

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


@pytest.fixture(scope="module")
def web_server(tmp_path_factory, tiny_model_dir, chromium):
    import uvicorn

    from emo_assets.resources import EmotionModelResource, StorageResource
    from emo_assets.web import create_app

    data_dir = tmp_path_factory.mktemp("web_data")
    rng = np.random.default_rng(3)
    recordings = {f"call_{i}.wav": (rng.standard_normal(16000 + 4000 * i) * 0.1).astype(np.float32) for i in range(4)}
    for name, wav in recordings.items():
        write_encoded(data_dir / "raw" / name, wav, 16000, "wav_pcm_16")
    emotion_model = EmotionModelResource(model=str(tiny_model_dir), device="cpu")
    model = emotion_model.load()
    ids = _write_lake(data_dir, model, {n: _decoded(data_dir / "raw" / n) for n in recordings})
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
        yield f"http://127.0.0.1:{port}", data_dir, model, ids
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _decoded(path: Path) -> np.ndarray:
    from emo_assets.lib.audio.load import load_mono_16k

    return load_mono_16k(path)


def _browser(playwright, chromium: str):
    return playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)


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
            page.goto(url)
            page.wait_for_selector(f"#recording option[value='{ids['call_0.wav']}']", state="attached")
            page.select_option("#recording", ids["call_0.wav"])
            page.click("#show")
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            assert page.inner_text("#emotion").endswith(expected.emotion)
            rows = page.query_selector_all("#similar tbody tr")
            # the recording itself is left out of its neighbours
            assert len(rows) == 3
            assert all("call_0.wav" not in r.inner_text() for r in rows)
        finally:
            browser.close()


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


def _emoji(emotion: str) -> str:
    from emo_assets.lib.results.analyze import EMOJI

    return EMOJI[emotion]
