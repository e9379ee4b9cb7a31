"""The model registry on SQLAlchemy (table ml_models), the champion's id mirrored to Redis.

- Artifacts are stored as bytes with their sha256 and an HMAC-SHA256 under SECRET_KEY
  (core/ml/artifact.py); they are verified before anything parses them, and a refused one (tampered,
  unsigned, signed with another key) is reported and skipped: the previous champion, or no model, is
  used instead.
- Redis holds only `pd:{bot_id}:ml:champion:{strategy}` = the champion's row id. The database is the
  truth: a missing or stale pointer is rewritten from it.
- A challenger the gate refused though it measured better (core.ml.verdict.worth_asking) becomes a
  recovery item (kind "ml_promote", options promote/dismiss); other refusals are only their model row;
  `promote_anyway` and `dismiss` decide it once (a second press finds it decided and does nothing).
  Every promotion is written to audit_log.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy import CursorResult

from core.ml.artifact import ArtifactRefused, load_verified, sign
from core.ml.model import Model
from core.ml.registry import ChampionLoad, ModelArtifact, ModelInfo
from core.persistence import StoreUnavailable
from core.phantom import Phantom
from storage.db import DB_DOWN, dialect_insert, session_factory
from storage.engine_store import phantom_of
from storage.hotstate import PREFIX, as_text, redis_errors
from storage.models import AuditLog, MLModel, PhantomTrade, RecoveryItem

log = logging.getLogger(__name__)

PROMOTE_KIND = "ml_promote"
PROMOTE_OPTIONS = ["promote", "dismiss"]
APPROVAL_TTL = timedelta(days=7)


def champion_key(bot_id: str, strategy: str) -> str:
    return f"{PREFIX}{bot_id}:ml:champion:{strategy}"


def _user_id(actor: str) -> int | None:
    """recovery_items.decided_by is a Telegram user id: "tg:123" or "123" -> 123."""
    digits = actor.removeprefix("tg:")
    return int(digits) if digits.lstrip("-").isdigit() else None


def _where(bot_id: str, strategy: str) -> tuple[Any, ...]:
    return MLModel.bot_id == bot_id, MLModel.strategy == strategy


class SqlModelRegistry:
    def __init__(self, db: AsyncEngine, key: bytes, redis: Redis | None = None) -> None:
        self.sessions = session_factory(db)
        self.key = key
        self.redis = redis

    # --- writing ----------------------------------------------------------------------------------
    async def save(self, artifact: ModelArtifact) -> bool:
        digest, mac = sign(self.key, artifact.bot_id, artifact.strategy, artifact.version, artifact.data)
        try:
            async with self.sessions.begin() as session:
                stmt = dialect_insert(session)(MLModel).values(
                    bot_id=artifact.bot_id, strategy=artifact.strategy, version=artifact.version,
                    trained_at=artifact.trained_at, n_samples=artifact.n_samples, metrics=artifact.metrics,
                    artifact=artifact.data, sha256=digest, hmac=mac, is_champion=False,
                ).on_conflict_do_nothing(index_elements=["bot_id", "strategy", "version"])
                inserted = cast("CursorResult[Any]", await session.execute(stmt)).rowcount == 1
        except DB_DOWN as exc:
            raise StoreUnavailable(f"ml registry: {type(exc).__name__}") from exc
        return inserted

    async def set_champion(self, bot_id: str, strategy: str, version: int, *, actor: str = "system",
                           reason: str | None = None) -> bool:
        try:
            async with self.sessions.begin() as session:
                row_id = await self._promote(session, bot_id, strategy, version, actor, "ml_promote",
                                             {"reason": reason})
        except DB_DOWN as exc:
            raise StoreUnavailable(f"ml registry: {type(exc).__name__}") from exc
        if row_id is None:
            return False
        await self._point(bot_id, strategy, row_id)
        return True

    async def _promote(self, session: AsyncSession, bot_id: str, strategy: str, version: int, actor: str,
                       action: str, details: dict[str, Any]) -> int | None:
        """Flip the champion flag inside `session`, with its audit row; None if `version` already is it."""
        row = (await session.execute(select(MLModel.id, MLModel.is_champion)
                                     .where(*_where(bot_id, strategy), MLModel.version == version))).first()
        if row is None:
            raise KeyError(f"no model {strategy} v{version} for bot {bot_id!r}")
        if row.is_champion:
            return None
        previous = await session.scalar(select(MLModel.version).where(*_where(bot_id, strategy),
                                                                      MLModel.is_champion.is_(True)))
        now = datetime.now(UTC)
        await session.execute(update(MLModel).where(*_where(bot_id, strategy), MLModel.is_champion.is_(True))
                              .values(is_champion=False))
        await session.execute(update(MLModel).where(MLModel.id == row.id)
                              .values(is_champion=True, promoted_at=now, promoted_by=actor[:64]))
        session.add(AuditLog(at=now, actor=actor[:64], bot_id=bot_id, action=action,
                             details={"strategy": strategy, "version": version, "previous": previous, **details}))
        return int(row.id)

    async def record_refusal(self, bot_id: str, strategy: str, version: int, report: dict[str, Any]) -> None:
        """One pending "promote anyway?" item per bot and strategy: a newer refusal supersedes it."""
        now = datetime.now(UTC)
        dedupe = f"{PROMOTE_KIND}:{bot_id}:{strategy}"
        details = {
            "strategy": strategy, "version": version, "why": report.get("why"),
            "challenger": {k: report.get("challenger", {}).get(k) for k in ("brier", "lift_r", "auc", "n")},
            "champion": {k: report.get("champion", {}).get(k) for k in ("version", "brier", "lift_r", "auc")},
            "base_rate": report.get("base_rate"),
        }
        try:
            async with self.sessions.begin() as session:
                pending = (await session.scalars(select(RecoveryItem).where(
                    RecoveryItem.dedupe_key == dedupe, RecoveryItem.status == "pending"))).all()
                if any((item.details or {}).get("version") == version for item in pending):
                    return
                for item in pending:
                    item.status, item.decision, item.decided_at = "expired", "superseded", now
                session.add(RecoveryItem(bot_id=bot_id, kind=PROMOTE_KIND, critical=False, dedupe_key=dedupe,
                                         details=details, options=list(PROMOTE_OPTIONS), status="pending",
                                         created_at=now, expires_at=now + APPROVAL_TTL))
        except DB_DOWN as exc:
            raise StoreUnavailable(f"ml registry: {type(exc).__name__}") from exc

    async def _decide(self, bot_id: str, strategy: str, version: int, actor: str, decision: str) -> int | None:
        """Mark the pending item of this challenger decided; the item id, or None if there is none."""
        now = datetime.now(UTC)
        async with self.sessions.begin() as session:
            items = (await session.scalars(select(RecoveryItem).where(
                RecoveryItem.kind == PROMOTE_KIND, RecoveryItem.bot_id == bot_id,
                RecoveryItem.dedupe_key == f"{PROMOTE_KIND}:{bot_id}:{strategy}",
                RecoveryItem.status == "pending"))).all()
            item = next((i for i in items if (i.details or {}).get("version") == version), None)
            if item is None:
                return None
            if item.expires_at is not None and item.expires_at < now:
                item.status, item.decided_at = "expired", now
                return None
            # conditional: of two presses racing, exactly one changes the row
            done = cast("CursorResult[Any]", await session.execute(update(RecoveryItem).where(
                RecoveryItem.id == item.id, RecoveryItem.status == "pending").values(
                status="approved" if decision == "promote" else "rejected", decision=decision,
                decided_by=_user_id(actor), decided_at=now)))
            if done.rowcount != 1:
                return None
            if decision == "promote":
                row_id = await self._promote(session, bot_id, strategy, version, actor, "ml_promote_anyway",
                                             {"item": item.id, "why_refused": item.details.get("why")})
            else:
                row_id = None
                session.add(AuditLog(at=now, actor=actor[:64], bot_id=bot_id, action="ml_promote_dismissed",
                                     details={"strategy": strategy, "version": version, "item": item.id}))
        if row_id is not None:
            await self._point(bot_id, strategy, row_id)
        return item.id

    async def promote_anyway(self, bot_id: str, strategy: str, version: int, actor: str) -> bool:
        """The operator overrides the gate. False when the item is no longer pending (pressed twice,
        superseded by a newer challenger, expired): nothing changes then."""
        return await self._decide(bot_id, strategy, version, actor, "promote") is not None

    async def dismiss(self, bot_id: str, strategy: str, version: int, actor: str) -> bool:
        return await self._decide(bot_id, strategy, version, actor, "dismiss") is not None

    # --- reading ----------------------------------------------------------------------------------
    async def load(self, bot_id: str, strategy: str, version: int) -> Model:
        """One version, verified then parsed; ArtifactRefused if it fails, KeyError if absent."""
        async with self.sessions() as session:
            row = (await session.execute(select(MLModel.artifact, MLModel.sha256, MLModel.hmac)
                                         .where(*_where(bot_id, strategy), MLModel.version == version))).first()
        if row is None:
            raise KeyError(f"no model {strategy} v{version} for bot {bot_id!r}")
        # verification (sha256 + HMAC) comes first inside load_verified; parsing takes ~0.1 s: off the loop
        return await asyncio.to_thread(load_verified, self.key, bot_id, strategy, version, bytes(row.artifact),
                                       row.sha256, row.hmac)

    async def load_champion(self, bot_id: str, strategy: str, version: int | None = None) -> ChampionLoad:
        async with self.sessions() as session:
            rows = (await session.execute(
                select(MLModel.id, MLModel.version, MLModel.is_champion, MLModel.promoted_at)
                .where(*_where(bot_id, strategy))
                .where(MLModel.promoted_at.is_not(None) | MLModel.is_champion.is_(True) |
                       (MLModel.version == (version if version is not None else -1)))
                .order_by(MLModel.is_champion.desc(), MLModel.promoted_at.desc(), MLModel.version.desc()))).all()
        champion = next((r for r in rows if r.is_champion), None)
        if version is None:
            order = [r for r in rows if r.is_champion or r.promoted_at is not None]
            if champion is not None:
                await self._repair_pointer(bot_id, strategy, int(champion.id))
        else:  # the version a checkpoint names, then the champions before it
            order = [r for r in rows if r.version == version] + [
                r for r in rows if r.version < version and r.promoted_at is not None]
        out = ChampionLoad()
        for r in order:
            try:
                out.model = await self.load(bot_id, strategy, int(r.version))
            except ArtifactRefused as exc:
                log.error("model artifact refused for bot %s: %s", bot_id, exc)
                out.refused.append(str(exc))
                continue
            out.version = int(r.version)
            return out
        return out

    async def list(self, bot_id: str, strategy: str | None = None) -> list[ModelInfo]:
        query = (select(MLModel.bot_id, MLModel.strategy, MLModel.version, MLModel.trained_at, MLModel.n_samples,
                        MLModel.metrics, MLModel.is_champion, MLModel.promoted_at, MLModel.promoted_by,
                        func.length(MLModel.artifact).label("size"))
                 .where(MLModel.bot_id == bot_id).order_by(MLModel.strategy, MLModel.version))
        if strategy is not None:
            query = query.where(MLModel.strategy == strategy)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return [ModelInfo(r.bot_id, r.strategy, r.version, r.trained_at, r.n_samples, r.metrics or {},
                          bool(r.is_champion), r.promoted_at, r.promoted_by, int(r.size or 0)) for r in rows]

    async def pending_approvals(self, bot_id: str) -> builtins.list[dict[str, Any]]:
        async with self.sessions() as session:
            items = (await session.scalars(select(RecoveryItem).where(
                RecoveryItem.bot_id == bot_id, RecoveryItem.kind == PROMOTE_KIND,
                RecoveryItem.status == "pending").order_by(RecoveryItem.id))).all()
        return [{"id": i.id, "details": i.details, "options": i.options, "created_at": i.created_at,
                 "expires_at": i.expires_at} for i in items]

    # --- Redis pointer (a cache: failures are warnings) --------------------------------------------
    async def _point(self, bot_id: str, strategy: str, row_id: int) -> None:
        if self.redis is None:
            return
        try:
            await self.redis.set(champion_key(bot_id, strategy), str(row_id))
        except redis_errors() as exc:
            log.warning("Redis champion pointer not written (%s); the database holds it", type(exc).__name__)

    async def _repair_pointer(self, bot_id: str, strategy: str, row_id: int) -> None:
        if self.redis is None:
            return
        try:
            cached = await self.redis.get(champion_key(bot_id, strategy))
        except redis_errors():
            return
        if cached is None or as_text(cached) != str(row_id):
            if cached is not None:
                log.warning("Redis named model row %s as %s champion, the database %s: rewritten", as_text(cached),
                            strategy, row_id)
            await self._point(bot_id, strategy, row_id)

    async def champion_pointer(self, bot_id: str, strategy: str) -> int | None:
        if self.redis is None:
            return None
        value = await self.redis.get(champion_key(bot_id, strategy))
        return None if value is None else int(value)


async def learning_phantoms(db: AsyncEngine, bot_id: str) -> list[Phantom]:
    """Closed phantoms WITH their features (closed_phantoms leaves them out): the filter's data."""
    async with session_factory(db)() as session:
        rows = (await session.scalars(select(PhantomTrade).where(
            PhantomTrade.bot_id == bot_id, PhantomTrade.status == "closed"))).all()
    return [phantom_of(r) for r in rows]
