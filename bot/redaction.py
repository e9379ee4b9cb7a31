"""The one redaction layer: every log handler and Sentry's hooks pass text through `Redactor`.

It masks the configured secret values wherever they appear, Telegram token shapes (also inside
`/bot<token>/` URLs) and the Bybit credential fields pybit and the v5 API put in requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"

# <bot id>:<35 chars> — the shape of every Bot API token, wherever it appears (URLs included).
TELEGRAM_TOKEN = re.compile(r"\d{5,}:[A-Za-z0-9_-]{30,}")
# Bybit v5 auth headers and pybit's request fields: api_key=..., "X-BAPI-SIGN": "...", sign=...
BYBIT_FIELDS = re.compile(
    r"(?i)(\b(?:x-bapi-api-key|x-bapi-sign|api[_-]?key|api[_-]?secret|apiKey|secret|sign(?:ature)?)"
    r"[\"']?\s*[:=]\s*[\"']?)([A-Za-z0-9+/=_-]{8,})"
)

# Key names whose values are secret, for recursive scrubbing of structured data (Sentry events).
SECRET_KEYS = frozenset({
    "telegram_bot_token", "bot_token", "token", "bybit_api_key", "bybit_api_secret", "api_key", "api_secret",
    "apikey", "apisecret", "secret", "secret_key", "sentry_dsn", "dsn", "password", "passwd",
    "telegram_webhook_secret", "webhook_secret", "x-telegram-bot-api-secret-token", "x-bapi-api-key",
    "x-bapi-sign", "sign", "signature", "authorization", "database_url", "redis_url",
})


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._literals: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """Add secret values to mask (longest first, so a secret containing another is masked whole)."""
        self._literals = sorted({*self._literals, *(s for s in secrets if s and len(s) >= 4)}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in self._literals)) if self._literals else None

    def text(self, value: str) -> str:
        if self._pattern is not None:
            value = self._pattern.sub(MASK, value)
        value = TELEGRAM_TOKEN.sub(MASK, value)
        return BYBIT_FIELDS.sub(lambda m: m.group(1) + MASK, value)

    def scrub(self, value: Any, key: str | None = None) -> Any:
        """Redact a nested structure (Sentry event, breadcrumb): secret keys and secret text alike."""
        if key is not None and key.lower().replace(" ", "_") in SECRET_KEYS and value not in (None, "", MASK):
            return MASK
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.scrub(v, k if isinstance(k, str) else None) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        return value


# The process-wide instance: logging and Sentry are set up with it, the settings feed it.
redactor = Redactor()
