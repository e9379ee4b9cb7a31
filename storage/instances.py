"""The desk processes sharing one database: each beats (its row's heartbeat and the bots it holds); the live
ones are those that beat recently. What placement (core/placement.py) reads, and /bots shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.db import dialect_insert, session_factory
from storage.models import Bot, DeskInstance

# the heartbeat job (every 30 s) and the placement beat (every lease ttl / 3) stamp the bots a process trades:
# fresher than this, that process trades the bot now
LIVE_HEARTBEAT = timedelta(minutes=2)


def trader_of(owner: str | None, heartbeat: datetime | None, now: datetime) -> str | None:
    """The process trading a bot now, from its row's owner and heartbeat (None: nobody, as far as we know)."""
    return owner if owner is not None and heartbeat is not None and now - heartbeat <= LIVE_HEARTBEAT else None


@dataclass(frozen=True)
class LiveInstances:
    """The processes that beat within the window, and which of them holds each bot."""
    instances: list[str]
    holders: dict[str, str]  # bot id -> instance


class Instances:
    def __init__(self, db: AsyncEngine, instance: str, started_at: datetime) -> None:
        self.sessions = session_factory(db)
        self.instance = instance
        self.started_at = started_at

    async def beat(self, holds: list[str], now: datetime, within: timedelta) -> LiveInstances:
        """Record this process alive with the bots it holds (also as each bot's owner), then read the live."""
        async with self.sessions.begin() as session:
            row = {"id": self.instance, "started_at": self.started_at, "heartbeat_at": now, "bots": sorted(holds)}
            stmt = dialect_insert(session)(DeskInstance).values(row)
            await session.execute(stmt.on_conflict_do_update(
                index_elements=["id"], set_={"heartbeat_at": now, "bots": sorted(holds)}))
            if holds:
                await session.execute(update(Bot).where(Bot.id.in_(holds)).values(
                    last_heartbeat=now, owner_instance=self.instance))
            rows = (await session.execute(select(DeskInstance.id, DeskInstance.bots)
                                          .where(DeskInstance.heartbeat_at >= now - within)
                                          .order_by(DeskInstance.id))).all()
        holders = {bot_id: instance for instance, bots in rows for bot_id in bots}
        return LiveInstances([r[0] for r in rows], holders)

    async def leave(self) -> None:
        """A clean stop: the others need not wait for this row to age out."""
        async with self.sessions.begin() as session:
            await session.execute(delete(DeskInstance).where(DeskInstance.id == self.instance))
