"""Redis: the optional hot-state layer (namespaced `pd:`). Losing it loses nothing."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

PREFIX = "pd:"


def redis_errors() -> tuple[type[Exception], ...]:
    """What a Redis call raises when Redis is unwell or away, for `except redis_errors():`. Imported at an
    exception, not with this module: redis takes 0.1 s to import, and only a desk with REDIS_URL set holds a
    client that can raise (the import is done by then)."""
    from redis.exceptions import RedisError

    return RedisError, OSError


def as_text(value: bytes | str) -> str:
    """A Redis reply (bytes from a client without decode_responses) as text."""
    return value if isinstance(value, str) else value.decode()


async def connect_redis(url: str | None, connect_timeout: float = 3.0) -> Redis | None:
    """A client when REDIS_URL is set (None otherwise). Unreachable is a warning, not an error: the
    client reconnects by itself on later commands, and the desk rebuilds Redis once it answers."""
    if not url:
        return None
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=connect_timeout, socket_timeout=connect_timeout,
                            health_check_interval=30)
    try:
        await client.ping()
    except redis_errors() as exc:
        log.warning("Redis unreachable (%s); the desk runs without it until it answers", type(exc).__name__)
    return client


async def redis_status(client: Redis | None) -> str:
    if client is None:
        return "disabled"
    try:
        await client.ping()
    except redis_errors():
        return "unavailable"
    return "ok"
