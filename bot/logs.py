"""Logging set-up: text or JSON lines, always through the redaction layer."""

from __future__ import annotations

import json
import logging
import sys
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
    for handler in root.handlers:
        handler.setFormatter(RedactingFormatter(inner, redact))
    # libraries' routine chatter (alembic's plugin set-up on every start, each job run) is not the operator's news
    for noisy in ("aiosqlite", "asyncio", "apscheduler.executors.default", "websocket", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
