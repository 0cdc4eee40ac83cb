"""What protects `emo web`: its settings, the access token, the upload byte cap, output expiry.

* **Exposure.** On a loopback address (127.0.0.1, ::1, localhost) the page is open to this machine
  only. On any other address `emo web` refuses to start without ``EMO_WEB_TOKEN``; with a token set
  (on any address) every request must carry it: ``Authorization: Bearer <token>``, an
  ``X-Emo-Token`` header, or the ``emo_token`` cookie. Opening ``/?token=<token>`` once in a browser
  sets the cookie (HttpOnly, SameSite=Strict) and redirects to ``/``, so the token leaves the
  address bar. Tokens are compared in constant time (:func:`hmac.compare_digest`) and never printed.
* **Uploads.** A request body larger than ``EMO_WEB_MAX_UPLOAD_MB`` is refused with 413: at once
  when its Content-Length says so, else (a chunked body, or one longer than it declared) as soon
  as the bytes received pass the cap: the rest is never read, and the app's own answer to the cut
  body (FastAPI's 400 "error parsing the body") is replaced by the 413. The decoded-duration cap (``EMO_WEB_MAX_UPLOAD_S``) is enforced while decoding, by
  :func:`emo_assets.lib.audio.guard.load_mono_16k_capped`.
* **Outputs.** Result folders under ``<data>/web_outputs/`` older than ``EMO_WEB_OUTPUTS_KEEP_S``
  are deleted (:func:`sweep_outputs`) when the server starts, before each new result and every
  quarter of that time while it runs.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

TOKEN_COOKIE = "emo_token"
TOKEN_HEADER = "x-emo-token"
DEFAULT_MAX_UPLOAD_MB = 50.0
DEFAULT_MAX_UPLOAD_S = 600.0
DEFAULT_OUTPUTS_KEEP_S = 3600.0


class WebSettingError(ValueError):
    """A web setting that cannot be used; the message names the variable and what to do."""


@dataclass(frozen=True)
class WebSettings:
    """The web page's limits and access token (``token`` is never part of repr or a message)."""

    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)
    max_upload_s: float = DEFAULT_MAX_UPLOAD_S
    outputs_keep_s: float = DEFAULT_OUTPUTS_KEEP_S
    token: str | None = None

    def __repr__(self) -> str:
        return (
            f"WebSettings(max_upload_bytes={self.max_upload_bytes}, max_upload_s={self.max_upload_s}, "
            f"outputs_keep_s={self.outputs_keep_s}, token={'set' if self.token else 'unset'})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WebSettings:
        """The settings from EMO_WEB_* in ``environ`` (read when `emo web` starts), else the defaults."""
        token = environ.get("EMO_WEB_TOKEN") or None
        if token is not None and len(token) < 16:
            raise WebSettingError("EMO_WEB_TOKEN is shorter than 16 characters; use a long random one")
        return cls(
            max_upload_bytes=int(_positive(environ, "EMO_WEB_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB) * 1024 * 1024),
            max_upload_s=_positive(environ, "EMO_WEB_MAX_UPLOAD_S", DEFAULT_MAX_UPLOAD_S),
            outputs_keep_s=_positive(environ, "EMO_WEB_OUTPUTS_KEEP_S", DEFAULT_OUTPUTS_KEEP_S),
            token=token,
        )

    def check_host(self, host: str) -> None:
        """Refuse to serve on a non-loopback address without a token."""
        if not is_loopback(host) and not self.token:
            raise WebSettingError(
                f"emo web on {host} would be reachable from other machines with no access control; "
                "set EMO_WEB_TOKEN to a long random secret (every request must then carry it), "
                "or serve on 127.0.0.1"
            )


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise WebSettingError(f"{name}={text!r} is not a positive number")
    return value


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """ASGI middleware: the access token (when set) and the request-body byte cap."""

    def __init__(self, app, settings: WebSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.settings.token:
            offered = _offered_token(headers)
            query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
            if scope["path"] == "/" and query is not None and _same(query, self.settings.token):
                await _redirect_with_cookie(send, self.settings.token)
                return
            if offered is None or not _same(offered, self.settings.token):
                await _json(
                    send,
                    401,
                    "this page needs its access token: open /?token=<EMO_WEB_TOKEN> once, or send the "
                    "header 'Authorization: Bearer <EMO_WEB_TOKEN>'",
                )
                return
        cap = self.settings.max_upload_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await _json(send, 413, _too_large(int(declared), cap))
            return
        received = 0
        refused = False  # the body passed the cap: whatever the app answers to that, the answer is 413
        started = False

        async def counted_receive():
            nonlocal received, refused
            if refused:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    refused = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if refused and not started:
                # The app's own answer to the failed read is dropped: FastAPI turns any error raised
                # while it parses a form into 400 "There was an error parsing the body".
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not refused or started:
                raise
            # refused before the app answered: whatever it raised on the way out (_BodyTooLarge, or
            # an error it made of it) is the refusal, answered below
        if refused and not started:
            await _json(send, 413, _too_large(received, cap))


def _too_large(size: int, cap: int) -> str:
    return (
        f"upload refused: more than {cap / 1024 / 1024:g} MB (received {size / 1024 / 1024:.1f} MB so far); "
        "send a smaller file (the limit is EMO_WEB_MAX_UPLOAD_MB)"
    )


def _offered_token(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if TOKEN_HEADER in headers:
        return headers[TOKEN_HEADER].strip()
    if "cookie" in headers:
        cookie = SimpleCookie()
        try:
            cookie.load(headers["cookie"])
        except Exception:  # a malformed cookie header is no token
            return None
        if TOKEN_COOKIE in cookie:
            return cookie[TOKEN_COOKIE].value
    return None


def _same(offered: str, token: str) -> bool:
    return hmac.compare_digest(offered.encode("utf-8"), token.encode("utf-8"))


async def _json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(send, token: str) -> None:
    cookie = f"{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode("latin-1")), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


_TOKEN_IN_QUERY = re.compile(r"(?i)([?&]token=)[^&\s\"]*")


class RedactTokenFilter(logging.Filter):
    """Replaces the value of a ``token=`` query parameter in a log line (uvicorn's access log prints
    the path with its query) by ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "token=" in text.lower():
            record.msg, record.args = _TOKEN_IN_QUERY.sub(r"\1***", text), ()
        return True


def redact_access_log() -> None:
    """Install :class:`RedactTokenFilter` on uvicorn's access logger (once)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokenFilter) for f in logger.filters):
        logger.addFilter(RedactTokenFilter())


def sweep_outputs(outputs: Path, keep_s: float, now: float | None = None) -> list[Path]:
    """Delete the result folders (``outputs_*``) under ``outputs`` last changed more than ``keep_s``
    seconds ago; returns those deleted."""
    now = time.time() if now is None else now
    removed = []
    if not outputs.is_dir():
        return removed
    for folder in sorted(outputs.glob("outputs_*")):
        try:
            age = now - folder.stat().st_mtime
        except FileNotFoundError:
            continue
        if folder.is_dir() and age > keep_s:
            shutil.rmtree(folder, ignore_errors=False)
            removed.append(folder)
    return removed
