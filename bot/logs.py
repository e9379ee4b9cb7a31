"""Logging set-up: text or JSON lines, always through the redaction layer."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from bot.redaction import Redactor, redactor

_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class LibraryLogLimiter(logging.Filter):
    """pybit and websocket-client log every failed reconnect as an ERROR (offline, ~30 lines every 40 s): the
    desk says each kind of their message once an hour, as a warning, with how many it held back. The desk's
    own view of the connection is /health's feed state."""

    LIBRARIES = ("pybit", "websocket")

    def __init__(self, every_s: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self.last: dict[str, float] = {}
        self.held: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.LIBRARIES):
            return True
        key = record.name + ":" + re.sub(r"\d+", "#", record.getMessage())[:80]  # one kind, whatever the numbers
        now = self.clock()
        last = self.last.get(key)
        if last is not None and now - last < self.every_s:
            self.held[key] += 1
            return False
        self.last[key] = now
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        if held := self.held.pop(key, 0):
            record.msg, record.args = f"{record.getMessage()} ({held} more like it since)", ()
        return True


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter; the whole formatted record (message, args, traceback) is redacted."""

    def __init__(self, inner: logging.Formatter, redact: Redactor) -> None:
        super().__init__()
        self.inner = inner
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact.text(self.inner.format(record))


def setup_logging(level: str = "INFO", fmt: str = "text", redact: Redactor = redactor) -> None:
    inner: logging.Formatter = (
        JsonFormatter() if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.setLevel(level)
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    # every handler present, whoever added it, formats through the redactor
    limiter = LibraryLogLimiter()
    for handler in root.handlers:
        handler.setFormatter(RedactingFormatter(inner, redact))
        if not any(isinstance(f, LibraryLogLimiter) for f in handler.filters):
            handler.addFilter(limiter)
    # libraries' routine chatter (alembic's plugin set-up on every start, each job run) is not the operator's news
    for noisy in ("aiosqlite", "asyncio", "apscheduler.executors.default", "websocket", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
