"""`emo web` against hostile uploads and unwanted visitors (issue 14, parts 3 and 4).

The server runs in its own process (uvicorn, as `emo web` runs it) so its peak memory can be read
from /proc while a two-hour FLAC of digital silence (363 KB compressed) is uploaded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from emo_assets.lib import schemas
from emo_assets.lib.audio.guard import RecordingTooLongError, load_mono_16k_capped, no_speech_reason
from emo_assets.lib.audio.load import AudioDecodeError
from emo_assets.lib.audio.sample_day import synth_speech, write_encoded
from emo_assets.lib.schemas import MONO
from emo_assets.web_guard import WebSettingError, WebSettings, is_loopback, sweep_outputs
from tests.helpers import SENTENCES, espeak

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TOKEN = "t0ken-" + "x" * 26


def silence_flac(path: Path, seconds: int, rate: int = 16000) -> Path:
    """Digital silence as 16-bit FLAC, written a minute at a time: compressed it is tiny."""
    minute = np.zeros(rate * 60, dtype=np.int16)
    with sf.SoundFile(path, "w", rate, 1, "PCM_16", format="FLAC") as out:
        for _ in range(seconds // 60):
            out.write(minute)
    return path


@pytest.fixture(scope="module")
def two_hour_silence(tmp_path_factory) -> Path:
    return silence_flac(tmp_path_factory.mktemp("silence") / "silence_2h.flac", 2 * 3600)


def test_the_duration_cap_stops_decoding_at_the_cap(two_hour_silence):
    assert two_hour_silence.stat().st_size < 1_000_000  # 2 h of audio in < 1 MB
    start = time.monotonic()
    with pytest.raises(RecordingTooLongError, match="longer than the 60 s allowed"):
        load_mono_16k_capped(two_hour_silence, 60)
    assert time.monotonic() - start < 2.0  # about one minute decoded, not two hours


def test_the_duration_cap_keeps_a_recording_within_it(tmp_path):
    samples = synth_speech(2.0, 16000, np.random.default_rng(0))
    path = write_encoded(tmp_path / "call.flac", samples, 16000, "flac")
    assert len(load_mono_16k_capped(path, 2.5)) == 32000
    with pytest.raises(RecordingTooLongError):
        load_mono_16k_capped(path, 1.0)
    with pytest.raises(AudioDecodeError):
        (tmp_path / "bad.wav").write_text("not audio")
        load_mono_16k_capped(tmp_path / "bad.wav", 10)


def _at_dbfs(samples: np.ndarray, dbfs: float) -> np.ndarray:
    """``samples`` scaled to an RMS level of ``dbfs``."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return (samples * (10 ** (dbfs / 20) / rms)).astype(np.float32)


_T = np.arange(5 * 16000) / 16000
# Recordings without speech at a normal level (-25 dBFS RMS, as a call's voice): an energy test passes them.
NOT_SPEECH = {
    "white-noise": np.random.default_rng(3).normal(0, 1, len(_T)),
    "tone-440hz": np.sin(2 * np.pi * 440 * _T),
    "mains-hum": sum(np.sin(2 * np.pi * 50 * k * _T) / k for k in (1, 2, 3, 4)),
}


@pytest.mark.parametrize("name", sorted(NOT_SPEECH))
def test_noise_a_tone_and_hum_at_a_normal_level_hold_no_speech(name):
    samples = _at_dbfs(NOT_SPEECH[name], -25.0)
    reason = no_speech_reason(samples)
    assert reason is not None and reason.startswith("no speech: the voice-activity model found no speech turn")


def test_digital_silence_holds_no_speech_and_spoken_sentences_do():
    assert "digital silence" in no_speech_reason(np.zeros(16000, np.float32))
    assert no_speech_reason(np.full(16000, 1e-6, np.float32)) is not None  # rounds to zero in 16 bits
    speech = np.concatenate([espeak(SENTENCES[0]), np.zeros(8000, np.float32), espeak(SENTENCES[1], "en-gb-x-rp")])
    assert no_speech_reason(speech) is None
    # a faint line is still speech: below -60 dBFS, where an energy test would have refused it
    assert no_speech_reason(_at_dbfs(speech, -70.0)) is None
    noisy = speech + _at_dbfs(np.resize(NOT_SPEECH["mains-hum"], len(speech)), -40.0)
    assert no_speech_reason(noisy) is None  # speech over hum


@pytest.mark.parametrize(
    "host, loopback",
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("192.168.1.5", False)],
)
def test_only_loopback_serves_without_a_token(host, loopback):
    assert is_loopback(host) is loopback
    if loopback:
        WebSettings().check_host(host)
    else:
        with pytest.raises(WebSettingError, match="EMO_WEB_TOKEN"):
            WebSettings().check_host(host)
        WebSettings(token=TOKEN).check_host(host)


def test_web_settings_from_the_environment():
    settings = WebSettings.from_env(
        {
            "EMO_WEB_MAX_UPLOAD_MB": "2",
            "EMO_WEB_MAX_UPLOAD_S": "30",
            "EMO_WEB_OUTPUTS_KEEP_S": "60",
            "EMO_WEB_TOKEN": TOKEN,
        }
    )
    assert (settings.max_upload_bytes, settings.max_upload_s, settings.outputs_keep_s) == (2 * 1024 * 1024, 30, 60)
    assert TOKEN not in repr(settings)
    assert WebSettings.from_env({}) == WebSettings()
    with pytest.raises(WebSettingError, match="EMO_WEB_MAX_UPLOAD_S"):
        WebSettings.from_env({"EMO_WEB_MAX_UPLOAD_S": "-1"})
    with pytest.raises(WebSettingError, match="shorter than 16"):
        WebSettings.from_env({"EMO_WEB_TOKEN": "short"})


def test_emo_web_refuses_a_public_address_without_a_token(tmp_path, monkeypatch, capsys):
    from emo_assets.cli import main

    monkeypatch.delenv("EMO_WEB_TOKEN", raising=False)
    assert main(["web", "--host", "0.0.0.0", "--model", "some/model", "--data-dir", str(tmp_path)]) == 2
    assert "set EMO_WEB_TOKEN" in capsys.readouterr().err


def test_old_result_folders_are_swept(tmp_path):
    old, new = tmp_path / "outputs_20260101_000000", tmp_path / "outputs_20260101_000001"
    for folder in (old, new):
        folder.mkdir()
        (folder / "result.json").write_text("{}")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert sweep_outputs(tmp_path, 3600) == [old]
    assert not old.exists() and new.exists()


SERVER = textwrap.dedent(
    """
    import sys, uvicorn
    from emo_assets.resources import EmotionModelResource, StorageResource
    from emo_assets.web import create_app
    from emo_assets.web_guard import WebSettings
    data_dir, model_dir, port, token = sys.argv[1:5]
    settings = WebSettings(max_upload_bytes=2 * 1024 * 1024, max_upload_s=60.0, outputs_keep_s=3600.0, token=token)
    app = create_app(StorageResource(data_dir=data_dir), EmotionModelResource(model=model_dir, device="cpu"), settings)
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="info")
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def _request(url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        url, data=body, method="POST" if body is not None else "GET", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"{}")


def _multipart(name: str, data: bytes) -> tuple[bytes, dict]:
    body = (
        (
            f'--B\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\nContent-Type: audio/flac\r\n\r\n'
        ).encode()
        + data
        + b"\r\n--B--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=B"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory, tiny_model_dir):
    """`emo web`'s app in its own process with a token, a 2 MB body cap and a 60 s duration cap."""
    data_dir = tmp_path_factory.mktemp("guarded")
    port = _free_port()
    log = data_dir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(data_dir), str(tiny_model_dir), str(port), TOKEN],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if _request(f"{url}/api/status", headers=auth)[2].get("state") == "ready":
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "the server did not get ready in 120 s"
            time.sleep(0.2)
        yield url, auth, proc, data_dir, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_two_hours_of_compressed_silence_are_refused_fast_in_bounded_memory(guarded_server, two_hour_silence):
    url, auth, proc, _data_dir, _log = guarded_server
    body, headers = _multipart("silence_2h.flac", two_hour_silence.read_bytes())
    before = _peak_rss_mb(proc.pid)
    start = time.monotonic()
    status, _, payload = _request(f"{url}/api/analyze", body, {**headers, **auth})
    took = time.monotonic() - start
    grew = _peak_rss_mb(proc.pid) - before
    print(f"2 h silence FLAC ({len(body)} bytes): HTTP {status} in {took:.2f} s, peak RSS grew {grew:.1f} MB")
    assert status == 413 and "longer than the 60 s allowed" in payload["detail"]
    assert took < 2.0
    assert grew < 50  # a 60 s cap at 16 kHz float32 is 3.8 MB; the whole file decoded would be 460 MB


def test_a_body_over_the_byte_cap_is_refused_with_413(guarded_server):
    url, auth, *_ = guarded_server
    body, headers = _multipart("big.flac", b"\0" * (3 * 1024 * 1024))
    # As curl does for a large upload: the headers with "Expect: 100-continue", then the answer is
    # read before the body is sent. The server refuses on Content-Length alone and never asks for the
    # body (a client that pushes the body anyway may see the connection closed under it).
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest("POST", "/api/analyze")
        for name, value in {**headers, **auth, "Content-Length": str(len(body)), "Expect": "100-continue"}.items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        status, payload = resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()
    assert status == 413 and "EMO_WEB_MAX_UPLOAD_MB" in payload["detail"]


def test_a_chunked_body_over_the_byte_cap_is_refused_with_413(guarded_server):
    """No Content-Length (Transfer-Encoding: chunked): the cap is met while the body streams in. The
    answer is the guard's 413, not FastAPI's 400 for a form it could not finish parsing, and it comes
    once the cap is passed: the server read about 2 MB of the 16 MB sent."""
    url, auth, *_ = guarded_server
    body, headers = _multipart("big.flac", b"\0" * (16 * 1024 * 1024))
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest("POST", "/api/analyze")
        for name, value in {**headers, **auth, "Transfer-Encoding": "chunked"}.items():
            conn.putheader(name, value)
        conn.endheaders()
        with contextlib.suppress(OSError):  # the server may close the connection under the rest
            for start in range(0, len(body), 64 * 1024):
                chunk = body[start : start + 64 * 1024]
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        status, payload = resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()
    assert status == 413, payload
    assert "more than 2 MB" in payload["detail"] and "EMO_WEB_MAX_UPLOAD_MB" in payload["detail"]
    received_mb = float(re.search(r"received ([\d.]+) MB", payload["detail"]).group(1))
    assert 2.0 <= received_mb < 4.0  # refused at the cap, not after the whole 16 MB


def test_recordings_without_speech_get_no_emotion_and_speech_does(guarded_server, tmp_path):
    """Through the HTTP API as a browser uploads: digital silence, white noise and hum (at a normal
    level) are each a 422 naming "no speech" with no emotion; spoken sentences get an emotion."""
    url, auth, *_ = guarded_server
    uploads = {"quiet.flac": silence_flac(tmp_path / "quiet.flac", 60)}
    for name in ("white-noise", "mains-hum"):
        uploads[f"{name}.flac"] = write_encoded(
            tmp_path / f"{name}.flac", _at_dbfs(NOT_SPEECH[name], -25.0), 16000, "flac"
        )
    for name, path in uploads.items():
        status, _, payload = _request(f"{url}/api/analyze", *_with(auth, _multipart(name, path.read_bytes())))
        print(f"{name}: HTTP {status} {payload.get('detail')}")
        assert status == 422 and "no speech" in payload["detail"] and "emotion" not in payload, name
    spoken = np.concatenate([espeak(SENTENCES[0]), np.zeros(8000, np.float32), espeak(SENTENCES[1])])
    speech = write_encoded(tmp_path / "call.flac", spoken, 16000, "flac")
    status, _, payload = _request(f"{url}/api/analyze", *_with(auth, _multipart("call.flac", speech.read_bytes())))
    assert status == 200 and payload["result"]["emotion"] in payload["labels"]


def _with(auth: dict, multipart: tuple[bytes, dict]) -> tuple[bytes, dict]:
    body, headers = multipart
    return body, {**headers, **auth}


def test_every_request_needs_the_token(guarded_server):
    url, _auth, *_ = guarded_server
    for path in ("/", "/api/status", "/api/recordings", "/download/outputs_20260101_000000/result.json"):
        status, _, payload = _request(f"{url}{path}")
        assert status == 401 and "access token" in payload["detail"], path
        assert _request(f"{url}{path}", headers={"X-Emo-Token": TOKEN[:-1] + "y"})[0] == 401
    assert _request(f"{url}/api/status", headers={"X-Emo-Token": TOKEN})[0] == 200
    assert _request(f"{url}/api/status", headers={"Cookie": f"emo_token={TOKEN}"})[0] == 200
    # a browser opens /?token=... once: the token goes into an HttpOnly cookie and leaves the address bar
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(f"{url}/?token={TOKEN}", timeout=30)
    assert redirect.value.code == 303 and redirect.value.headers["Location"] == "/"
    assert "HttpOnly" in redirect.value.headers["Set-Cookie"]
    assert _request(f"{url}/?token=wrong-token-wrong-token")[0] == 401


def test_the_token_never_reaches_the_server_log(guarded_server):
    url, _auth, _proc, _data_dir, log = guarded_server
    _request(f"{url}/api/status", headers={"Authorization": "Bearer not-the-token"})
    _request(f"{url}/?token={TOKEN}")  # the one place a token rides in a URL
    time.sleep(0.5)
    text = log.read_text()
    assert "GET /api/status" in text  # the access log is on in this server: it is what is checked
    assert TOKEN not in text


def test_a_warehouse_recording_is_read_from_its_day_only(tmp_path, tiny_model_dir, monkeypatch):
    """The page's lookup asks the warehouse for the recording's newest day, then reads that day's
    lake files: never every day of the lake."""
    from emo_assets import web
    from emo_assets.lib.store import lake
    from emo_assets.resources import EmotionModelResource, StorageResource
    from tests import test_web

    model = EmotionModelResource(model=str(tiny_model_dir), device="cpu").load()
    rng = np.random.default_rng(7)
    for day in ("2026-11-19", "2026-11-20", "2026-11-21"):
        monkeypatch.setattr(test_web, "DAY", day)
        ids = test_web._write_lake(
            tmp_path, model, {f"call_{day}.wav": (rng.standard_normal(16000) * 0.1).astype(np.float32)}
        )
    read_days = []
    real_partition = lake.read_partition

    def spy_partition(lake_root, table, day):
        read_days.append(day)
        return real_partition(lake_root, table, day)

    def no_full_read(*args, **kwargs):
        raise AssertionError("the lookup read every day of a lake table")

    monkeypatch.setattr(lake, "read_partition", spy_partition)
    monkeypatch.setattr(lake, "read_table", no_full_read)
    (audio_id,) = ids.values()  # the recording of 2026-11-21
    found, day, channel, _ = web._warehouse_analysis(StorageResource(data_dir=str(tmp_path)), audio_id)
    assert day == "2026-11-21" and set(read_days) == {"2026-11-21"} and channel == "mono"
    assert found.audio_name == "call_2026-11-21.wav" and found.embedding.shape[0] == 1
    assert web._warehouse_analysis(StorageResource(data_dir=str(tmp_path)), "f" * 64) is None


def _day_of_scores(day: str, n: int) -> pa.Table:
    """``n`` emotion_scores rows of ``day`` whose audio_ids are random-looking SHA-256s, as real ones are."""
    schema = schemas.TABLES["emotion_scores"].arrow_schema(None)
    rng = np.random.default_rng(int(day.replace("-", "")))
    columns = {
        "audio_id": [hashlib.sha256(f"{day}-{i}".encode()).hexdigest() for i in range(n)],
        "date": [dt.date.fromisoformat(day)] * n,
        "model_id": ["some/model"] * n,
        "channel": [MONO] * n,
        "emotion": ["neutral"] * n,
    }
    for field in schema:
        columns.setdefault(field.name, rng.random(n).astype(np.float32))
    return pa.table(columns, schema=schema)


@pytest.mark.parametrize("published", [True, False], ids=["read-copy", "lake-only"])
def test_a_recordings_newest_day_is_found_without_reading_every_day(tmp_path, published):
    """The page's lookup of a warehouse recording (web.NEWEST_DAY_SQL, on the read copy or, before the
    first publish, on the lake) reads the rows of the day holding it and of the few days its Bloom
    filter cannot rule out, not every day's audio_id column: DuckDB's profile counts the row groups
    (one per day file here) it scanned. Without the filter, min/max statistics: 12 of 20."""
    from emo_assets import web
    from emo_assets.lib.analytics import similarity
    from emo_assets.lib.store import lake, publish
    from emo_assets.resources import StorageResource

    days = [f"2026-10-{d:02d}" for d in range(1, 21)]
    storage = StorageResource(data_dir=str(tmp_path))
    for day in days:
        lake.write_partition(storage.lake_dir, "emotion_scores", day, _day_of_scores(day, 50))
    if published:
        publish.publish(storage.warehouse_path, storage.lake_dir, grace_s=0)
    assert storage.warehouse_path.with_name("warehouse_read.duckdb").exists() is published
    wanted = hashlib.sha256(f"{days[12]}-7".encode()).hexdigest()
    assert web._newest_day(storage, wanted) == days[12]
    assert web._newest_day(storage, "f" * 64) is None
    con = similarity.search_connection(storage.warehouse_path, storage.lake_dir)
    try:
        plan = con.execute("EXPLAIN ANALYZE " + web.NEWEST_DAY_SQL, [wanted]).fetchall()[0][1]
    finally:
        con.close()
    scanned, total = map(int, re.search(r"Row Groups Scanned: (\d+) / (\d+)", plan).groups())
    print(f"row groups scanned: {scanned} of {total}")
    assert total == len(days)
    assert 1 <= scanned <= 3  # the recording's day, and at most two false positives of 19
