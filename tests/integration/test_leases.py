"""The lease's Redis copy: Redis coming back empty (a restart, an eviction) must not cost a process the bots
whose database lock it still holds; a key naming another instance still means the lease is lost."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from storage.db import create_engine
from storage.leases import Leases


async def test_redis_restarted_empty_keeps_the_lease(tmp_path: Path, db_url: str, redis_url: str) -> None:
    engine = create_engine(db_url)
    redis = Redis.from_url(redis_url)
    leases = Leases(engine, "desk-a", tmp_path / "leases", redis, ttl_s=30)
    try:
        assert await leases.acquire("main")
        assert leases.held["main"].redis_held
        await redis.flushdb()  # what a restarted Redis holds: nothing
        assert await leases.renew() == []
        assert "main" in leases.held
        assert await redis.get("pd:lease:main") == b"desk-a"  # the copy is written again, with its ttl
        assert 0 < await redis.pttl("pd:lease:main") <= 30_000

        await redis.set("pd:lease:main", "desk-b")  # taken by another instance: lost
        assert await leases.renew() == ["main"]
        assert "main" not in leases.held
    finally:
        for lease in list(leases.held.values()):
            await leases._drop(lease)
        await redis.aclose()
        await engine.dispose()
