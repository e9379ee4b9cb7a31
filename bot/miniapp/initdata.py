"""The Mini App's identity: Telegram's signed `initData`, validated as Telegram specifies.

    secret_key        = HMAC-SHA256(key="WebAppData", msg=<bot token>)
    data_check_string = every received field but `hash`, as "key=value", sorted by key, joined by "\\n"
    hash              = hex(HMAC-SHA256(key=secret_key, msg=data_check_string))

The values are the URL-decoded ones. The hash is compared in constant time, and `auth_date` must be
recent: a leaked initData string is a login only for that long. Nothing here logs the data or the token;
a refusal's reason says which check failed, never with what.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

MAX_LENGTH = 8192  # Telegram's initData is a few hundred bytes; anything this long is not it
FUTURE_SKEW_S = 60  # an auth_date ahead of our clock by more than this is refused
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class InvalidInitData(ValueError):
    """initData that does not prove a Telegram user; the message is safe to log (no data in it)."""


@dataclass(frozen=True)
class WebAppUser:
    id: int
    first_name: str
    username: str | None
    auth_date: int


def secret_key(token: str) -> bytes:
    return hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()


def data_check_string(fields: Mapping[str, str]) -> str:
    return "\n".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "hash")


def signature(fields: Mapping[str, str], token: str) -> str:
    return hmac.new(secret_key(token), data_check_string(fields).encode(), hashlib.sha256).hexdigest()


def sign(fields: Mapping[str, str], token: str) -> str:
    """initData as Telegram would send it for these fields (tests, benchmarks)."""
    return urlencode({**fields, "hash": signature(fields, token)})


def validate(init_data: str, token: str, now: float, max_age_s: float) -> WebAppUser:
    """The user this initData proves, or InvalidInitData."""
    if not init_data or len(init_data) > MAX_LENGTH:
        raise InvalidInitData("missing or oversized")
    try:
        pairs = parse_qsl(init_data, keep_blank_values=True, strict_parsing=True, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInitData("not a query string") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise InvalidInitData("a field given twice")  # which one counts would be ours to guess
    given = fields.get("hash", "")
    if not _HEX64.match(given):
        raise InvalidInitData("no hash")
    if not hmac.compare_digest(signature(fields, token), given):
        raise InvalidInitData("bad signature")
    # signed by Telegram from here on: a malformed field is Telegram's format changing, still refused
    try:
        auth_date = int(fields["auth_date"])
        user = json.loads(fields["user"])
        user_id, first_name = int(user["id"]), str(user.get("first_name", ""))
        username = user.get("username")
    except (KeyError, ValueError, TypeError):
        raise InvalidInitData("no auth_date or user") from None
    if auth_date > now + FUTURE_SKEW_S:
        raise InvalidInitData("auth_date in the future")
    if now - auth_date > max_age_s:
        raise InvalidInitData("expired")
    return WebAppUser(user_id, first_name, str(username) if username else None, auth_date)
