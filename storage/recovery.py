"""Recovery items (decisions the desk must not take alone) and the audit log of who decided what.

An item is created once per problem (`dedupe_key` while pending), decided at most once (the status
is re-checked in the same UPDATE, so a second press changes nothing), expires, and every decision is
written to audit_log with its actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from storage.db import session_factory
from storage.models import AuditLog, RecoveryItem

DEFAULT_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Decided:
    ok: bool  # False: already decided, expired or unknown
    item_id: int
    status: str
    decision: str | None
    bot_id: str | None = None
    kind: str | None = None
    details: dict[str, Any] | None = None


def audit(session: AsyncSession, actor: str, action: str, bot_id: str | None = None,
          details: dict[str, Any] | None = None, at: datetime | None = None) -> None:
    session.add(AuditLog(at=at or datetime.now(UTC), actor=actor[:64], bot_id=bot_id, action=action[:64],
                         details=details or {}))


class RecoveryBook:
    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = session_factory(engine)

    async def raise_item(self, bot_id: str | None, kind: str, *, dedupe_key: str, details: dict[str, Any],
                         options: list[str], critical: bool = True, ttl: timedelta = DEFAULT_TTL,
                         now: datetime | None = None) -> tuple[int, bool]:
        """(item id, created?) — an identical pending problem is not raised twice."""
        now = now or datetime.now(UTC)
        async with self.sessions.begin() as session:
            existing = await session.scalar(select(RecoveryItem.id).where(
                RecoveryItem.dedupe_key == dedupe_key, RecoveryItem.status == "pending"))
            if existing is not None:
                return int(existing), False
            item = RecoveryItem(bot_id=bot_id, kind=kind, critical=critical, dedupe_key=dedupe_key, details=details,
                                options=options, status="pending", created_at=now, expires_at=now + ttl)
            session.add(item)
            await session.flush()
            audit(session, "system", f"recovery_raised:{kind}", bot_id, {"item": item.id, **details}, now)
            return int(item.id), True

    async def pending(self, bot_id: str | None = None) -> list[RecoveryItem]:
        async with self.sessions() as session:
            query = select(RecoveryItem).where(RecoveryItem.status == "pending").order_by(RecoveryItem.id)
            if bot_id is not None:
                query = query.where(RecoveryItem.bot_id == bot_id)
            return list((await session.scalars(query)).all())

    async def critical_pending(self, bot_id: str) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(RecoveryItem).where(
                RecoveryItem.bot_id == bot_id, RecoveryItem.status == "pending", RecoveryItem.critical)) or 0)

    async def decide(self, item_id: int, decision: str, actor: str, actor_id: int | None,
                     now: datetime | None = None) -> Decided:
        """Approve (an option) or reject; only a pending, unexpired item with that option changes."""
        now = now or datetime.now(UTC)
        async with self.sessions.begin() as session:
            item = await session.get(RecoveryItem, item_id)
            if item is None:
                return Decided(False, item_id, "unknown", None)
            if item.status == "pending" and item.expires_at is not None and item.expires_at <= now:
                await session.execute(update(RecoveryItem).where(RecoveryItem.id == item_id,
                                                                 RecoveryItem.status == "pending")
                                      .values(status="expired", decided_at=now))
                return Decided(False, item_id, "expired", item.decision, item.bot_id, item.kind, item.details)
            if item.status != "pending" or (decision != "reject" and decision not in (item.options or [])):
                return Decided(False, item_id, item.status, item.decision, item.bot_id, item.kind, item.details)
            status = "rejected" if decision == "reject" else "approved"
            done = await session.execute(update(RecoveryItem).where(
                RecoveryItem.id == item_id, RecoveryItem.status == "pending").values(
                status=status, decision=decision, decided_by=actor_id, decided_at=now))
            if not done.rowcount:  # type: ignore[attr-defined]  # another press won the race
                return Decided(False, item_id, "decided", None, item.bot_id, item.kind, item.details)
            audit(session, actor, f"recovery_{status}:{item.kind}", item.bot_id,
                  {"item": item_id, "decision": decision}, now)
            return Decided(True, item_id, status, decision, item.bot_id, item.kind, item.details)

    async def expire(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        async with self.sessions.begin() as session:
            done = await session.execute(update(RecoveryItem).where(
                RecoveryItem.status == "pending", RecoveryItem.expires_at <= now).values(status="expired",
                                                                                        decided_at=now))
            return int(done.rowcount or 0)  # type: ignore[attr-defined]
