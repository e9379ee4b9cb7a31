"""The engine's persistence on SQLAlchemy (signals, phantom_trades, the checkpoint in bot_states),
mirrored to Redis when present. The database is the truth; Redis can always be rebuilt from it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from core.engine import Checkpoint, Decision
from core.ledger import trade_id
from core.market.candle import INTERVAL_MS
from core.persistence import Batch, Restored, StoreUnavailable
from core.phantom import Phantom, PhantomStats
from storage.db import DB_DOWN, is_db_down, session_factory, upsert
from storage.hotstate import PREFIX, redis_errors
from storage.models import Bot, BotState, PhantomTrade, table_of
from storage.models import Signal as SignalRow

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.typing import EncodableT, FieldT

log = logging.getLogger(__name__)

BLOCKED_TTL_S = 8 * 86_400
PHANTOM_UPDATABLE = ("status", "outcome", "exit_reason", "exit_price", "exit_time", "realized_r", "pnl_pct", "mfe_r",
                     "mae_r", "tp1_time", "candles_seen", "funding_r", "action", "reason", "was_executed",
                     "updated_at")
SIGNAL_UPDATABLE = ("action", "reason", "trade_id")  # an executed signal whose entry the exchange refused


@dataclass
class _MirrorState:
    """What the stores of one Redis client share. A save (commit, then mirror) and a rebuild (read, then
    rewrite) of one bot hold its lock: a rebuild that read the database before a save committed and wrote
    Redis after that save's mirror would bring the phantoms the save closed back as active. A mirror that
    failed leaves its bot stale: Redis lacks that write until a rebuild (the watch job does it)."""
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)


_MIRRORS: weakref.WeakKeyDictionary[Redis, _MirrorState] = weakref.WeakKeyDictionary()


def _dec(x: float | None) -> Decimal | None:
    return None if x is None else Decimal(repr(x))


def signal_row(d: Decision, now: datetime) -> dict[str, Any]:
    s = d.signal
    return {
        "id": s.id, "bot_id": s.bot_id, "symbol": s.symbol, "interval": s.interval, "strategy": s.strategy,
        "strategy_version": s.strategy_version or None, "side": s.side, "time": s.time, "entry": s.entry,
        "stop_loss": s.stop_loss, "take_profit": s.take_profit,
        "features": s.features, "ml_score": d.score.p_win, "ml_ev": d.score.ev_r,
        "model_version": d.score.model_version, "action": d.action, "reason": d.reason,
        "trade_id": trade_id(s.id) if d.action == "EXECUTED" else None,
        "created_at": now,
    }


def phantom_row(p: Phantom, now: datetime) -> dict[str, Any]:
    return {
        "id": p.id, "bot_id": p.bot_id, "signal_id": p.id, "symbol": p.symbol, "interval": p.interval,
        "strategy": p.strategy, "side": p.side, "entry": p.entry, "stop_loss": p.stop_loss,
        "take_profit": p.take_profit, "opened_at": p.opened_at, "status": p.status, "outcome": p.outcome,
        "exit_reason": p.exit_reason, "exit_price": _dec(p.exit_price), "exit_time": p.exit_time,
        "realized_r": p.realized_r, "pnl_pct": p.pnl_pct, "mfe_r": p.mfe_r, "mae_r": p.mae_r,
        "tp1_time": p.tp1_time, "candles_seen": p.candles_seen, "funding_r": p.funding_r,
        "was_executed": p.was_executed,
        "action": p.action, "reason": p.reason, "ml_score": p.ml_score, "ml_ev": p.ml_ev, "features": p.features,
        "updated_at": now,
    }


def phantom_of(row: Any) -> Phantom:
    p = Phantom(row.id, row.bot_id, row.symbol, row.interval, row.strategy, row.side, row.entry, row.stop_loss,
                row.take_profit, row.opened_at, row.action, row.reason, row.ml_score, row.ml_ev,
                getattr(row, "features", None) or {})
    p.status, p.outcome, p.exit_reason = row.status, row.outcome, row.exit_reason
    p.exit_price = None if row.exit_price is None else float(row.exit_price)
    p.exit_time, p.realized_r, p.pnl_pct = row.exit_time, row.realized_r, row.pnl_pct
    p.mfe_r, p.mae_r, p.tp1_time, p.candles_seen = row.mfe_r, row.mae_r, row.tp1_time, row.candles_seen
    p.funding_r = row.funding_r or 0.0
    # the last candle applied: the signal's candle plus the (contiguous: gaps close phantoms) candles seen
    p.last_ms += row.candles_seen * INTERVAL_MS[row.interval]
    return p


@dataclass(frozen=True)
class _Statements:
    signals: Any
    phantoms: Any
    forget_checkpoint: Any
    checkpoint: Any


@functools.cache
def _statements(dialect: str) -> _Statements:
    """The batch's statements on the tables (Core: no ORM unit of work per row), built once per dialect."""
    signals, phantoms, states = table_of(SignalRow), table_of(PhantomTrade), table_of(BotState)
    upsert_signals = upsert(dialect, signals, ["id"], SIGNAL_UPDATABLE)
    upsert_phantoms = upsert(dialect, phantoms, ["id"], PHANTOM_UPDATABLE)
    forget = delete(states).where(states.c.bot_id == bindparam("bot"), states.c.kind == "checkpoint")
    return _Statements(upsert_signals, upsert_phantoms, forget, states.insert())


class SqlEngineStore:
    def __init__(self, db: AsyncEngine, redis: Redis | None = None) -> None:
        self.db = db
        self.sessions = session_factory(db)
        self.redis = redis

    def _mirror_state(self) -> _MirrorState:
        assert self.redis is not None
        return _MIRRORS.setdefault(self.redis, _MirrorState())

    def _redis_lock(self, bot_id: str) -> contextlib.AbstractAsyncContextManager[Any]:
        if self.redis is None:
            return contextlib.nullcontext()
        return self._mirror_state().locks.setdefault(bot_id, asyncio.Lock())

    def _mark_stale(self, bot_id: str) -> None:
        if self.redis is not None:
            self._mirror_state().stale.add(bot_id)

    def stale_bots(self) -> set[str]:
        """Bots whose Redis mirror missed a write since their last rebuild."""
        return set(self._mirror_state().stale) if self.redis is not None else set()

    async def save(self, bot_id: str, batch: Batch) -> None:
        async with self._redis_lock(bot_id):
            try:
                await self._save(bot_id, batch)
            except DB_DOWN as exc:
                if not is_db_down(exc):
                    raise
                raise StoreUnavailable(type(exc).__name__) from exc
            except asyncio.CancelledError:  # (a lease lost, a stop) the commit may have landed unmirrored
                self._mark_stale(bot_id)
                raise
            await self._mirror(bot_id, batch)

    async def _save(self, bot_id: str, batch: Batch) -> None:
        now = datetime.now(UTC)
        sql = _statements(self.db.dialect.name)
        async with self.sessions.begin() as session:
            # one statement per table, built once and executed over all the rows (multi-row INSERTs): nothing is
            # compiled anew per batch
            if signals := [signal_row(d, now) for d in batch.decisions]:
                await session.execute(sql.signals, signals)
            if phantoms := [phantom_row(p, now) for p in batch.phantoms.values()]:
                await session.execute(sql.phantoms, phantoms)
            if batch.checkpoint is not None:
                await self._write_checkpoint(session, sql, bot_id, batch.checkpoint, now)

    async def _write_checkpoint(self, session: AsyncSession, sql: _Statements, bot_id: str, cp: Checkpoint,
                                now: datetime) -> None:
        await session.execute(sql.forget_checkpoint, {"bot": bot_id})
        extra = cp.extra
        await session.execute(sql.checkpoint, {
            "bot_id": bot_id, "taken_at": now, "kind": "checkpoint", "equity": Decimal(str(extra.get("equity", 0))),
            "peak_equity": Decimal(str(extra.get("peak_equity", 0))),
            "drawdown_pct": float(extra.get("drawdown_pct", 0)), "halted": bool(extra.get("halted", False)),
            "halt_reason": extra.get("halt_reason"), "open_positions": list(extra.get("open_positions", [])),
            "trailing_stops": dict(extra.get("trailing_stops", {})), "counters": cp.as_json(),
        })
        if extra.get("halted"):  # the halt and the state that caused it commit together: a restart finds both
            await session.execute(update(Bot).where(Bot.id == bot_id, Bot.status != "halted").values(
                status="halted", status_reason=extra.get("halt_reason"), status_since=now, updated_at=now))

    async def amend_signal(self, signal_id: str, action: str, reason: str) -> None:
        """A stored signal (and its phantom) gets a new action at once: an entry the exchange refused is
        REJECTED now, not at the next batch (which stores the same change if the signal is not saved yet)."""
        now = datetime.now(UTC)
        async with self.sessions.begin() as session:
            await session.execute(update(SignalRow).where(SignalRow.id == signal_id).values(
                action=action, reason=reason, trade_id=None))
            await session.execute(update(PhantomTrade).where(PhantomTrade.id == signal_id).values(
                action=action, reason=reason, was_executed=action == "EXECUTED", updated_at=now))

    async def restore(self, bot_id: str) -> Restored:
        async with self.sessions() as session:
            state = await session.scalar(
                select(BotState).where(BotState.bot_id == bot_id, BotState.kind == "checkpoint")
                .order_by(BotState.taken_at.desc()).limit(1))
            rows = (await session.scalars(
                select(PhantomTrade).where(PhantomTrade.bot_id == bot_id, PhantomTrade.status == "active")
                .order_by(PhantomTrade.opened_at, PhantomTrade.id))).all()
        checkpoint = Checkpoint.from_json(state.counters) if state is not None else None
        active = [phantom_of(r) for r in rows]
        await self._compare_redis(bot_id, active)
        return Restored(checkpoint, active)

    async def closed_phantoms(self, bot_id: str) -> list[Phantom]:
        cols = [c for c in PhantomTrade.__table__.columns if c.name != "features"]
        async with self.sessions() as session:
            rows = (await session.execute(
                select(*cols).where(PhantomTrade.bot_id == bot_id, PhantomTrade.status == "closed"))).all()
        return [phantom_of(r) for r in rows]

    async def phantom_stats(self, bot_id: str) -> PhantomStats:
        stats = PhantomStats()
        for p in await self.closed_phantoms(bot_id):
            stats.add(p)
        return stats

    async def counts(self, bot_id: str) -> dict[str, int]:
        async with self.sessions() as session:
            signals = await session.scalar(select(func.count()).select_from(SignalRow)
                                           .where(SignalRow.bot_id == bot_id))
            phantoms = dict((await session.execute(
                select(PhantomTrade.status, func.count()).where(PhantomTrade.bot_id == bot_id)
                .group_by(PhantomTrade.status))).all())
        return {"signals": int(signals or 0), "phantoms_active": int(phantoms.get("active", 0)),
                "phantoms_closed": int(phantoms.get("closed", 0))}

    async def export_learning_data(self, bot_id: str, path: Path) -> int:
        """Features + outcome of every closed phantom (gap exits left out) to Parquet; returns the row count."""
        async with self.sessions() as session:
            rows = (await session.scalars(
                select(PhantomTrade).where(PhantomTrade.bot_id == bot_id, PhantomTrade.status == "closed",
                                           PhantomTrade.exit_reason != "gap")
                .order_by(PhantomTrade.opened_at, PhantomTrade.id))).all()
        import pandas as pd  # an export only: the engine's saves never need it

        frame = pd.DataFrame([{
            "id": r.id, "symbol": r.symbol, "interval": r.interval, "strategy": r.strategy, "side": r.side,
            "opened_at": r.opened_at, "exit_time": r.exit_time, "action": r.action, "outcome": r.outcome,
            "exit_reason": r.exit_reason, "realized_r": r.realized_r, "win": int((r.realized_r or 0) > 0),
            "ml_score": r.ml_score, **{f"f_{k}": v for k, v in (r.features or {}).items()},
        } for r in rows])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
        return len(frame)

    # --- Redis mirror (a cache and a second copy: failures are warnings) -----------------------------
    def _key(self, bot_id: str, *parts: str) -> str:
        return PREFIX + ":".join((bot_id, *parts))

    async def _mirror(self, bot_id: str, batch: Batch) -> None:
        if self.redis is None:
            return
        try:
            pipe = self.redis.pipeline(transaction=True)
            active: dict[FieldT, EncodableT] = {p.id: json.dumps(phantom_row(p, p.opened_at), default=str)
                                              for p in batch.phantoms.values() if p.status == "active"}
            closed = [p.id for p in batch.phantoms.values() if p.status == "closed"]
            if active:
                pipe.hset(self._key(bot_id, "phantoms"), mapping=active)
            if closed:
                pipe.hdel(self._key(bot_id, "phantoms"), *closed)
            if batch.checkpoint is not None:
                self._mirror_checkpoint(pipe, bot_id, batch.checkpoint)
            await pipe.execute()
        except asyncio.CancelledError:  # the write may or may not have landed
            self._mark_stale(bot_id)
            raise
        except redis_errors() as exc:
            self._mark_stale(bot_id)
            log.warning("Redis mirror skipped (%s); the database holds everything", type(exc).__name__)

    def _mirror_checkpoint(self, pipe: Any, bot_id: str, cp: Checkpoint) -> None:
        for strategy, window in cp.win_windows.items():
            key = self._key(bot_id, "winrate", strategy)
            pipe.delete(key)
            if window:
                pipe.rpush(key, *window)
        for day_strategy, count in cp.blocked.items():
            day, strategy = day_strategy.split("|", 1)
            key = self._key(bot_id, "blocked", day)
            pipe.hset(key, strategy, count)
            pipe.expire(key, BLOCKED_TTL_S)

    async def rebuild_redis(self, bot_id: str) -> int:
        """Redis came back empty (or was lost): rewrite the hot state from the database."""
        if self.redis is None:
            return 0
        async with self._redis_lock(bot_id):
            restored = await self.restore(bot_id)
            batch = Batch(phantoms={p.id: p for p in restored.active}, checkpoint=restored.checkpoint)
            await self.redis.delete(self._key(bot_id, "phantoms"))
            self._mirror_state().stale.discard(bot_id)  # back in if the rewrite below fails
            await self._mirror(bot_id, batch)
        return len(restored.active)

    async def _compare_redis(self, bot_id: str, active: list[Phantom]) -> None:
        if self.redis is None:
            return
        try:
            cached = set(await self.redis.hkeys(self._key(bot_id, "phantoms")))
        except redis_errors():
            return
        ids = {p.id.encode() for p in active}
        if cached and cached != ids:  # the watch job rebuilds a stale bot
            self._mark_stale(bot_id)
            log.warning("Redis held %d active phantoms, the database %d: the database wins, Redis is rebuilt",
                        len(cached), len(ids))

