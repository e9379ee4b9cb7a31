"""Redis: the optional hot-state layer (namespaced `pd:`). Losing it loses nothing."""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

PREFIX = "pd:"


def as_text(value: bytes | str) -> str:
    """A Redis reply (bytes from a client without decode_responses) as text."""
    return value if isinstance(value, str) else value.decode()


async def connect_redis(url: str | None, connect_timeout: float = 3.0) -> Redis | None:
    """A client when REDIS_URL is set (None otherwise). Unreachable is a warning, not an error: the
    client reconnects by itself on later commands, and the desk rebuilds Redis once it answers."""
    if not url:
        return None
    client = Redis.from_url(url, socket_connect_timeout=connect_timeout, socket_timeout=connect_timeout,
                            health_check_interval=30)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        log.warning("Redis unreachable (%s); the desk runs without it until it answers", type(exc).__name__)
    return client


async def redis_status(client: Redis | None) -> str:
    if client is None:
        return "disabled"
    try:
        await client.ping()
    except (RedisError, OSError):
        return "unavailable"
    return "ok"
