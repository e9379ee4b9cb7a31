"""Secrets never leave the process: not in log output (text or JSON), not in Sentry envelopes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from bot.logs import setup_logging
from bot.redaction import MASK, Redactor
from bot.sentry import setup_sentry
from bot.settings import load_settings

TOKEN = "987654321:AAF-secretTokenPart_abcdefghijklmnopqr"
API_KEY = "Xq7TmA9pLkW3sRv2Nb"
API_SECRET = "Z9yXwVuTsRqPoNmLkJiHgFeDcBa987654321"
OTHER_TOKEN = "5550001:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"  # not configured: caught by shape
SECRETS = (TOKEN, API_KEY, API_SECRET, OTHER_TOKEN)


class CaptureTransport(Transport):
    envelopes: list[Envelope] = []  # noqa: RUF012 - shared with the test

    def capture_envelope(self, envelope: Envelope) -> None:
        CaptureTransport.envelopes.append(envelope)


def test_redactor_text() -> None:
    r = Redactor([API_SECRET])
    assert r.text(f"GET https://api.telegram.org/bot{OTHER_TOKEN}/getMe") == f"GET https://api.telegram.org/bot{MASK}/getMe"
    assert API_SECRET not in r.text(f"x{API_SECRET}y")
    assert r.text("api_key=ABCDEFGH12345678&x=1") == f"api_key={MASK}&x=1"
    assert r.text('{"X-BAPI-SIGN": "0123456789abcdef0123"}') == '{"X-BAPI-SIGN": "' + MASK + '"}'
    assert r.text("price=65000.5 qty=0.001 symbol=BTCUSDT") == "price=65000.5 qty=0.001 symbol=BTCUSDT"


def test_redactor_scrub_nested() -> None:
    r = Redactor([API_SECRET])
    event = {"extra": {"bybit_api_secret": "whatever", "note": f"has {API_SECRET}"},
             "frames": [{"vars": {"token": "t", "n": 3}}]}
    out = r.scrub(event)
    assert out["extra"]["bybit_api_secret"] == MASK
    assert out["extra"]["note"] == f"has {MASK}"
    assert out["frames"][0]["vars"] == {"token": MASK, "n": 3}


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[io.StringIO]:
    monkeypatch.chdir(tmp_path)
    for key, value in {"TELEGRAM_BOT_TOKEN": TOKEN, "BYBIT_API_KEY": API_KEY, "BYBIT_API_SECRET": API_SECRET,
                       "SENTRY_DSN": "https://abc123@o0.ingest.sentry.io/0"}.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    redactor = Redactor(settings.secret_values())
    out = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = [logging.StreamHandler(out)]
    CaptureTransport.envelopes = []
    yield out, settings, redactor  # type: ignore[misc]
    sentry_sdk.get_client().close()
    sentry_sdk.init(dsn=None)
    root.handlers = saved_handlers
    root.setLevel(saved_level)


def _emit_everything(log: logging.Logger) -> None:
    log.debug("debug token=%s", TOKEN)
    log.info("info url https://api.telegram.org/bot%s/sendMessage", TOKEN)
    log.warning("warning key %s secret %s", API_KEY, API_SECRET)
    log.error("error other bot %s", OTHER_TOKEN)
    log.critical("critical %s", {"api_secret": API_SECRET})
    bybit_api_secret = API_SECRET  # a local variable Sentry would send with the frame
    try:
        raise RuntimeError(f"exchange refused key {API_KEY} / {bybit_api_secret} via bot{TOKEN}")
    except RuntimeError:
        log.exception("forced failure")
        sentry_sdk.capture_exception()
    sentry_sdk.add_breadcrumb(category="http", message=f"POST https://api.telegram.org/bot{TOKEN}/getUpdates",
                              data={"url": f"https://api.telegram.org/bot{TOKEN}/getUpdates", "api_key": API_KEY})
    sentry_sdk.capture_message(f"message with {API_SECRET}")
    sentry_sdk.flush(timeout=5)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_in_logs_or_sentry(configured: Any, fmt: str) -> None:
    out, settings, redactor = configured
    setup_logging("DEBUG", fmt, redactor)
    assert setup_sentry(settings, "test", redactor, transport=CaptureTransport)
    _emit_everything(logging.getLogger("phantomdesk.test"))

    logs = out.getvalue()
    assert "forced failure" in logs and "Traceback" in logs and MASK in logs  # the lines were written
    assert len(logs.strip().splitlines()) >= 6
    if fmt == "json":
        first = json.loads(logs.splitlines()[0])
        assert first["level"] == "DEBUG"

    assert CaptureTransport.envelopes, "Sentry sent nothing"
    payload = b"".join(item.get_bytes() for env in CaptureTransport.envelopes for item in env.items)
    assert b"RuntimeError" in payload and b"forced failure" in payload  # the error did reach Sentry
    assert b"getUpdates" in payload  # and the breadcrumb
    for secret in SECRETS:
        assert secret not in logs, f"{secret[:6]}… leaked into logs"
        assert secret.encode() not in payload, f"{secret[:6]}… leaked into Sentry"


def test_library_errors_are_said_once_an_hour_as_warnings() -> None:
    """pybit/websocket reconnect errors (offline: dozens a minute) reach the log once per kind an hour."""
    import logging

    from bot.logs import LibraryLogLimiter

    now = [0.0]
    limiter = LibraryLogLimiter(every_s=3600, clock=lambda: now[0])

    def record(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, (), None)

    first = record("websocket", "[Errno -2] Name or service not known - goodbye")
    assert limiter.filter(first) and first.levelname == "WARNING"
    for n in range(30):
        now[0] += 1
        assert not limiter.filter(record("websocket", f"[Errno -{n}] Name or service not known - goodbye"))
    assert limiter.filter(record("pybit._websocket_stream", "Connection failed"))  # another kind: said
    assert limiter.filter(record("phantomdesk", "the desk's own error"))  # never the desk's own lines
    now[0] += 3600
    later = record("websocket", "[Errno -2] Name or service not known - goodbye")
    assert limiter.filter(later) and "(30 more like it since)" in later.getMessage()
