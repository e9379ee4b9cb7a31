"""One trader per bot: a lease per bot, held by exactly one process.

- PostgreSQL: a session advisory lock on a connection kept open for the purpose. The server drops it
  the moment that connection dies (a killed process, a lost network), so a standby takes over at once.
- SQLite: an OS file lock next to the database (released by the kernel when the holder dies).
- Redis (when present): also `SET pd:lease:<bot> <instance> NX PX ttl`, renewed with a compare-and-
  extend script; a holder that cannot renew within the ttl stops trading the bot. Redis being down
  never blocks the database lock (it is the second copy, not the authority), and Redis back without
  the key (a restart, an eviction) gets it written again: nobody can have taken a bot whose database
  lock is still ours. Only a key naming another instance means the lease is lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.db import is_sqlite
from storage.hotstate import as_text, redis_errors

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("phantomdesk.leases")

RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not holder then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


def lock_key(bot_id: str) -> int:
    """A stable signed 64-bit advisory-lock key per bot."""
    return int.from_bytes(hashlib.sha256(f"phantomdesk:{bot_id}".encode()).digest()[:8], "big", signed=True)


@dataclass
class Lease:
    bot_id: str
    conn: AsyncConnection | None = None  # PostgreSQL: the connection holding the advisory lock
    file: FileLock | None = None  # SQLite
    redis_held: bool = False


@dataclass
class Leases:
    db: AsyncEngine
    instance: str
    lock_dir: Path
    redis: Redis | None = None
    ttl_s: float = 60.0
    held: dict[str, Lease] = field(default_factory=dict)

    def _redis_key(self, bot_id: str) -> str:
        return f"pd:lease:{bot_id}"

    async def acquire(self, bot_id: str) -> bool:
        """Take the bot's lease if nobody holds it (never waits)."""
        if bot_id in self.held:
            return True
        lease = Lease(bot_id)
        if is_sqlite(str(self.db.url)):
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.lock_dir / f"{bot_id}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                return False
            lease.file = lock
        else:
            conn = await self.db.connect()
            try:
                got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(bot_id)})).scalar()
                await conn.commit()
            except Exception:
                await conn.close()
                raise
            if not got:
                await conn.close()
                return False
            lease.conn = conn
        if self.redis is not None:
            try:
                ok = await self.redis.set(self._redis_key(bot_id), self.instance, nx=True, px=int(self.ttl_s * 1000))
                if not ok:
                    holder = await self.redis.get(self._redis_key(bot_id))
                    if holder is not None and as_text(holder) != self.instance:
                        await self._drop(lease)  # someone else's lease has not expired yet
                        return False
                lease.redis_held = True
            except redis_errors() as exc:
                log.warning("Redis lease for %s skipped (%s); the database lock decides", bot_id, type(exc).__name__)
        self.held[bot_id] = lease
        log.info("lease taken: bot %s is traded by %s", bot_id, self.instance)
        return True

    async def renew(self) -> list[str]:
        """Keep every lease alive; returns the bots whose lease was lost (stop trading them)."""
        lost = []
        for bot_id, lease in list(self.held.items()):
            if not await self._alive(lease):
                lost.append(bot_id)
                await self._drop(lease)
                del self.held[bot_id]
                log.error("lease lost: bot %s is no longer traded by %s", bot_id, self.instance)
        return lost

    async def _alive(self, lease: Lease) -> bool:
        if lease.conn is not None:
            try:
                await lease.conn.execute(text("SELECT 1"))
                await lease.conn.commit()
            except Exception:
                return False
        if lease.redis_held and self.redis is not None:
            try:
                renewed = await self.redis.eval(RENEW, 1, self._redis_key(lease.bot_id), self.instance,
                                                int(self.ttl_s * 1000))
            except redis_errors():
                return True  # Redis away: the database lock still stands
            if not renewed:  # taken by another instance
                return False
        return True

    async def _drop(self, lease: Lease) -> None:
        if lease.conn is not None:
            try:
                await lease.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(lease.bot_id)})
                await lease.conn.commit()
            except Exception as exc:
                log.debug("advisory unlock: %s", exc)
            await lease.conn.close()
        if lease.file is not None:
            lease.file.release()
        if lease.redis_held and self.redis is not None:
            with contextlib.suppress(*redis_errors()):
                await self.redis.eval(RELEASE, 1, self._redis_key(lease.bot_id), self.instance)

    async def release(self, bot_id: str) -> None:
        """Give one bot's lease up (handed over to another process)."""
        if (lease := self.held.pop(bot_id, None)) is not None:
            await self._drop(lease)

    async def release_all(self) -> None:
        for lease in list(self.held.values()):
            await self._drop(lease)
        self.held.clear()

    def status(self) -> dict[str, Any]:
        return {bot_id: {"holder": self.instance, "redis": lease.redis_held} for bot_id, lease in self.held.items()}
