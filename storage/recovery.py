"""Recovery items (decisions the desk must not take alone) and the audit log of who decided what.

An item is created once per problem and state (`dedupe_key`): not again while it is pending, nor once
it was decided and its decision held (an "ignore" of that state stays ignored); again when it expired
undecided or its decision found the state changed or failed. An item is decided at most once (the
status is re-checked in the same UPDATE, so a second press changes nothing), and its effect is recorded
on it: "acting" with the decision, then what was done (core/recovery.py). Every decision and effect is
written to audit_log with its actor.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from core.decisions import Decided
from storage.db import session_factory
from storage.models import AuditLog, RecoveryItem

DEFAULT_TTL = timedelta(hours=24)
ACTING = "acting"  # core.recovery.PENDING_EFFECT: decided, effect not (yet) performed
REDO = frozenset({ACTING, "queued"})  # performed again by the process trading the bot
REOPEN = frozenset({"changed", "failed"})  # the decision did not settle the problem: it may be raised again


def audit(session: AsyncSession, actor: str, action: str, bot_id: str | None = None,
          details: dict[str, Any] | None = None, at: datetime | None = None) -> None:
    session.add(AuditLog(at=at or datetime.now(UTC), actor=actor[:64], bot_id=bot_id, action=action[:64],
                         details=details or {}))


class RecoveryBook:
    def __init__(self, db: AsyncEngine) -> None:
        self.sessions = session_factory(db)

    async def raise_item(self, bot_id: str | None, kind: str, *, dedupe_key: str, details: dict[str, Any],
                         options: list[str], critical: bool = True, ttl: timedelta = DEFAULT_TTL,
                         now: datetime | None = None) -> tuple[int, bool]:
        """(item id, created?) — an identical pending problem is not raised twice."""
        now = now or datetime.now(UTC)
        async with self.sessions.begin() as session:
            rows = (await session.execute(select(RecoveryItem.id, RecoveryItem.status, RecoveryItem.effect).where(
                RecoveryItem.dedupe_key == dedupe_key, RecoveryItem.status != "expired")
                .order_by(RecoveryItem.id.desc()))).all()
            for row in rows:
                if row.status == "pending" or (row.effect or {}).get("state") not in REOPEN:
                    return int(row.id), False
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

    async def get(self, item_id: int) -> RecoveryItem | None:
        async with self.sessions() as session:
            return await session.get(RecoveryItem, item_id)

    async def critical_pending(self, bot_id: str) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(RecoveryItem).where(
                RecoveryItem.bot_id == bot_id, RecoveryItem.status == "pending", RecoveryItem.critical)) or 0)

    async def decide(self, item_id: int, decision: str, actor: str, actor_id: int | None,
                     now: datetime | None = None) -> Decided:
        """Approve one of the item's options; only a pending, unexpired item with that option changes. The
        effect is recorded as "acting" in the same UPDATE: a crash before it is performed leaves a trace
        the process trading the bot finishes at its next reconciliation."""
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
            if item.status != "pending" or decision not in (item.options or []):
                return Decided(False, item_id, item.status, item.decision, item.bot_id, item.kind, item.details,
                               item.effect)
            done = await session.execute(update(RecoveryItem).where(
                RecoveryItem.id == item_id, RecoveryItem.status == "pending").values(
                status="approved", decision=decision, decided_by=actor_id, decided_at=now, effect={"state": ACTING}))
            if not done.rowcount:  # type: ignore[attr-defined]  # another press won the race
                return Decided(False, item_id, "decided", None, item.bot_id, item.kind, item.details)
            audit(session, actor, f"recovery_approved:{item.kind}", item.bot_id,
                  {"item": item_id, "decision": decision}, now)
            return Decided(True, item_id, "approved", decision, item.bot_id, item.kind, item.details,
                           {"state": ACTING})

    async def record_effect(self, item_id: int, effect: dict[str, Any], actor: str,
                            now: datetime | None = None) -> None:
        """What a decision did, on the item and in audit_log (with who decided)."""
        now = now or datetime.now(UTC)
        async with self.sessions.begin() as session:
            item = await session.get(RecoveryItem, item_id)
            if item is None:
                return
            item.effect = effect
            audit(session, actor, f"recovery_effect:{item.kind}", item.bot_id,
                  {"item": item_id, "decision": item.decision, **effect}, now)

    async def announced(self, item_id: int, now: datetime | None = None) -> None:
        """The item reached the admins with its buttons (the first delivery counts)."""
        async with self.sessions.begin() as session:
            await session.execute(update(RecoveryItem).where(
                RecoveryItem.id == item_id, RecoveryItem.announced_at.is_(None)).values(
                announced_at=now or datetime.now(UTC)))

    async def unfinished(self, bot_id: str) -> list[RecoveryItem]:
        """Decisions of this bot whose effect is still to be performed (a crash, another process)."""
        async with self.sessions() as session:
            rows = (await session.scalars(select(RecoveryItem).where(
                RecoveryItem.bot_id == bot_id, RecoveryItem.status == "approved").order_by(RecoveryItem.id))).all()
        return [r for r in rows if (r.effect or {}).get("state") in REDO]

    async def expire(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        async with self.sessions.begin() as session:
            done = await session.execute(update(RecoveryItem).where(
                RecoveryItem.status == "pending", RecoveryItem.expires_at <= now).values(status="expired",
                                                                                        decided_at=now))
            return int(done.rowcount or 0)  # type: ignore[attr-defined]
