"""The durable ledger: trade opens/closes (trade + orders + stats cache), the records handed over together in
one transaction (a live bot hands over each as it happens, a replay a batch's).

If the database does not answer, the record goes to the local journal (fsynced) and to a capped
Redis backup list, and the desk carries on. `flush_journal` replays the journal as soon as the
database answers again; replay is an upsert by trade id (a close is never overwritten by its open),
so replaying twice is harmless. While a backlog exists, new records join it, to keep their order.

If the journal cannot take a record either (a full disk), `record` does not raise: the record is held
in memory, in order, and `fault` says why until every held record is written (the next `record` or
`flush_journal` tries again: journal backlog first, then the held records, then the new one). The
runtime blocks new positions while `fault` is set, so only exits of open positions can pile up there.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.ledger import LedgerEvent, OrderRecord, TradeRecord
from core.stats import TradeFacts
from storage.db import DB_DOWN, cells, is_db_down, others, session_factory, upsert
from storage.hotstate import PREFIX, redis_errors
from storage.journal import Journal
from storage.models import Order, Trade, TradeStatsCache, table_of

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

BACKUP_CAP = 1000
WINDOWS = {"7d": timedelta(days=7), "30d": timedelta(days=30)}


class Landed(StrEnum):
    """Where `record` put an event: acknowledged (db, journal) or held in memory (not durable yet)."""

    DB = "db"
    JOURNAL = "journal"
    HELD = "held"


@dataclass
class FlushReport:
    replayed: int = 0
    corrupt: int = 0
    remaining: int = 0  # journal records and held records still waiting
    held: int = 0


def trade_row(t: TradeRecord, now: datetime) -> dict[str, Any]:
    return {**t.__dict__, "created_at": now, "updated_at": now}


def order_row(o: OrderRecord) -> dict[str, Any]:
    return dict(o.__dict__)


class SqlLedger:
    def __init__(self, db: AsyncEngine, journal: Journal, redis: Redis | None = None) -> None:
        self.engine = db
        self.sessions = session_factory(db)
        self.journal = journal
        self.redis = redis
        self.held: deque[LedgerEvent] = deque()  # neither the database nor the journal took them
        self._fault: str | None = None
        # one writer at a time: a flush job's journal rewrite must not drop a record appended meanwhile
        self._lock = asyncio.Lock()

    @property
    def fault(self) -> str | None:
        """Why records wait in memory (e.g. "disk full: journal append failed (...)"); None when none do."""
        return self._fault if self.held else None

    async def record(self, *events: LedgerEvent) -> Landed:
        """`events` in order, in one transaction when the database takes them (a replay hands over a batch's)."""
        async with self._lock:
            if self.journal.backlog():
                await self._replay_journal()  # the backlog goes first: records keep their order
            self.held.extend(events)  # behind the records already held, for the same reason
            try:
                landed = await self._place_held()
            except Exception:
                for event in reversed(events):  # a statement the database refused (a bug) raises, as it always did
                    if self.held and self.held[-1] is event:
                        self.held.pop()
                raise
        if landed is not Landed.DB:
            for event in events:
                await self._backup(event)
        return landed

    async def flush_journal(self, stop: Callable[[], bool] | None = None) -> FlushReport:
        """Replay the journal into the database, oldest first (stop at the first failure, or between two records
        once `stop()` is true), then write the records held in memory behind it."""
        async with self._lock:
            report = await self._replay_journal(stop)
            await self._place_held()
        report.held = len(self.held)
        report.remaining += report.held
        return report

    async def _place_held(self) -> Landed:
        """Write the held records in order: all in one transaction to the database if no journal backlog waits
        and it answers, else each to the journal. HELD if one could not be written, else where the last went."""
        count = len(self.held)
        if self.held and not self.journal.backlog():
            try:
                await self._write(list(self.held))
                self.held.clear()
            except DB_DOWN as exc:
                if not is_db_down(exc):
                    raise
                ids = sorted({e.trade.id for e in self.held})
                log.warning("database unavailable (%s): %s %s goes to the journal", type(exc).__name__,
                            "trade" if len(ids) == 1 else "the record of trades", ", ".join(ids))
        landed = Landed.DB
        while self.held:
            event = self.held[0]
            try:
                self.journal.append(event.as_json())
            except OSError as exc:  # a full disk, a read-only or vanished volume: keep it, never lose it
                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                self._fault = (f"{'disk full' if full else 'storage failing'}: journal append failed "
                               f"({exc.strerror or exc})")
                log.error("ledger %s of trade %s not written, held in memory (%d record(s) wait): %s", event.kind,
                          event.trade.id, len(self.held), self._fault)
                return Landed.HELD
            self.held.popleft()
            landed = Landed.JOURNAL
        if self._fault is not None:
            log.warning("ledger writes again: %d held record(s) written (%s)", count, self._fault)
            self._fault = None
        return landed

    async def _replay_journal(self, stop: Callable[[], bool] | None = None) -> FlushReport:
        """Oldest first; stop at the first failure, or between two records once `stop()` is true (the desk is
        stopping: the rest waits in the journal)."""
        good, bad = self.journal.read()
        report = FlushReport(corrupt=len(bad))
        rewrite = True
        try:
            self.journal.set_aside(bad)
        except OSError as exc:  # the journal keeps them (and everything else) until they can be set aside
            log.error("journal %s: corrupt lines not set aside yet (%s)", self.journal.path.name, exc)
            report.corrupt, rewrite = 0, False
        remaining = [doc for _, doc in good]
        try:
            while remaining and not (stop is not None and stop()):
                await self._write([LedgerEvent.from_json(remaining[0])])
                remaining.pop(0)
                report.replayed += 1
        except DB_DOWN as exc:
            if not is_db_down(exc):
                raise
            log.info("journal flush paused (%s): %d records wait", type(exc).__name__, len(remaining))
        if rewrite and (report.replayed or bad):
            try:
                self.journal.keep_only(remaining)
            except OSError as exc:  # the journal keeps them all; replaying again is harmless (upserts)
                log.warning("journal %s not rewritten (%s): replayed records stay in it", self.journal.path.name,
                            exc)
        report.remaining = len(remaining)
        if report.replayed:
            log.info("journal flushed: %d records replayed into the database", report.replayed)
        return report

    def log_held(self) -> None:
        """At shutdown: held records exist nowhere else, so the log gets them whole (a human can replay them)."""
        for event in self.held:
            log.error("ledger record never written (held in memory at shutdown: %s): %s", self.fault,
                      json.dumps(event.as_json()))

    async def _write(self, events: list[LedgerEvent]) -> None:
        """One transaction for all of `events`, in order; the stats cache once at the end, as writing them one by
        one would leave it."""
        now = datetime.now(UTC)
        sql = _statements(self.engine.dialect.name)
        closed: dict[str, list[TradeRecord]] = {}  # bot -> the closes that count, in order
        async with self.engine.begin() as conn:
            for event in events:
                t = event.trade
                # RETURNING a row = the trade was new or not yet closed: a close only counts once in the stats
                changed = (await conn.execute(sql.trade, trade_row(t, now))).first() is not None
                for o in event.orders:
                    await conn.execute(sql.order, order_row(o))
                if event.kind == "close" and changed:
                    closed.setdefault(t.bot_id, []).append(t)
            for bot_id, trades in closed.items():
                await self._refresh_stats(conn, sql, bot_id, trades, now)

    async def _refresh_stats(self, conn: AsyncConnection, sql: _Statements, bot_id: str, closes: list[TradeRecord],
                             now: datetime) -> None:
        """all_time: add these closes; 7d/30d: re-aggregate the windows ending at the last one's exit (one range
        scan over the trades, these included)."""
        current = (await conn.execute(sql.all_time, {"bot": bot_id})).first()
        figures = dict(current.figures) if current else {"gross_profit": "0", "gross_loss": "0"}
        trades = current.trades if current else 0
        wins = current.wins if current else 0
        net = current.net_pnl if current else Decimal(0)
        for t in closes:
            assert t.net_pnl is not None
            key = "gross_profit" if t.net_pnl > 0 else "gross_loss"
            figures[key] = str(Decimal(figures[key]) + t.net_pnl)
            trades += 1
            wins += 1 if t.net_pnl > 0 else 0
            net += t.net_pnl
        rows = [_stats_row(bot_id, "all_time", trades, wins, net, figures, now)]
        end = closes[-1].exit_time
        assert end is not None
        params = {"bot": bot_id, "end": end, **{f"since_{p}": end - span for p, span in WINDOWS.items()}}
        agg = (await conn.execute(sql.windows, params)).one()
        for k, period in enumerate(WINDOWS):
            n, total, gp, gl, w = agg[5 * k:5 * k + 5]
            rows.append(_stats_row(bot_id, period, int(n or 0), int(w or 0), Decimal(total or 0),
                                   {"gross_profit": str(gp or 0), "gross_loss": str(gl or 0),
                                    "window_end": end.isoformat()}, now))
        await conn.execute(sql.stats, rows)

    async def _backup(self, event: LedgerEvent) -> None:
        if self.redis is None:
            return
        key = f"{PREFIX}{event.trade.bot_id}:trades:backup"
        try:
            await self.redis.lpush(key, json.dumps(event.as_json()))
            await self.redis.ltrim(key, 0, BACKUP_CAP - 1)
        except redis_errors() as exc:
            log.warning("Redis trade backup skipped (%s)", type(exc).__name__)

    # --- reads ------------------------------------------------------------------------------------------
    async def closed_trades(self, bot_id: str) -> list[TradeRecord]:
        cols = [c for c in Trade.__table__.columns if c.name not in ("created_at", "updated_at")]
        async with self.sessions() as session:
            rows = (await session.execute(select(*cols).where(Trade.bot_id == bot_id, Trade.status == "closed")
                                          .order_by(Trade.exit_time, Trade.id))).all()
        return [TradeRecord(**{c.name: getattr(r, c.name) for c in cols}) for r in rows]

    async def open_trades(self, bot_id: str) -> list[TradeRecord]:
        cols = [c for c in Trade.__table__.columns if c.name not in ("created_at", "updated_at")]
        async with self.sessions() as session:
            rows = (await session.execute(select(*cols).where(Trade.bot_id == bot_id, Trade.status == "open")
                                          .order_by(Trade.entry_time, Trade.id))).all()
        return [TradeRecord(**{c.name: getattr(r, c.name) for c in cols}) for r in rows]

    async def facts(self, bot_id: str, since: datetime | None = None) -> list[TradeFacts]:
        """The columns the statistics need, for /stats (fast even over 100,000 trades)."""
        query = select(Trade.id, Trade.symbol, Trade.strategy, Trade.entry_time, Trade.exit_time, Trade.net_pnl,
                       Trade.fees, Trade.realized_r, Trade.funding).where(Trade.bot_id == bot_id,
                                                                          Trade.status == "closed")
        if since is not None:
            query = query.where(Trade.exit_time >= since)
        async with self.sessions() as session:
            rows = (await session.execute(query.order_by(Trade.exit_time, Trade.id))).all()
        return [TradeFacts(*cells(r)) for r in rows]

    async def ping(self) -> None:
        async with self.sessions() as session:
            await session.execute(text("SELECT 1"))


@dataclass(frozen=True)
class _Statements:
    trade: Any
    order: Any
    stats: Any
    all_time: Any
    windows: Any


@functools.cache
def _statements(dialect: str) -> _Statements:
    """The ledger's statements, built once per dialect: SQLAlchemy then compiles each only once."""
    trades, orders, cache = table_of(Trade), table_of(Order), table_of(TradeStatsCache)
    # a late open (a journal replay) must never turn a closed trade back into an open one
    trade = upsert(dialect, trades, ["id"], others(trades, "id", "created_at"),
                   where=trades.c.status != "closed").returning(trades.c.id)
    order = upsert(dialect, orders, ["order_link_id"], others(orders, "id", "order_link_id", "created_at"))
    stats = upsert(dialect, cache, ["bot_id", "period"], others(cache, "bot_id", "period"))
    all_time = select(cache.c.trades, cache.c.wins, cache.c.net_pnl, cache.c.figures).where(
        cache.c.bot_id == bindparam("bot"), cache.c.period == "all_time")
    pnl, columns = trades.c.net_pnl, []
    for period in WINDOWS:
        inside = trades.c.exit_time > bindparam(f"since_{period}")
        columns += [func.sum(case((inside, 1), else_=0)), func.sum(case((inside, pnl), else_=0)),
                    func.sum(case((inside & (pnl > 0), pnl), else_=0)),
                    func.sum(case((inside & (pnl <= 0), pnl), else_=0)),
                    func.sum(case((inside & (pnl > 0), 1), else_=0))]
    longest = max(WINDOWS, key=lambda p: WINDOWS[p])
    windows = select(*columns).where(trades.c.bot_id == bindparam("bot"), trades.c.status == "closed",
                                     trades.c.exit_time > bindparam(f"since_{longest}"),
                                     trades.c.exit_time <= bindparam("end"))
    return _Statements(trade, order, stats, all_time, windows)


def _stats_row(bot_id: str, period: str, trades: int, wins: int, net: Decimal, figures: dict[str, Any],
               now: datetime) -> dict[str, Any]:
    gp, gl = Decimal(figures["gross_profit"]), Decimal(figures["gross_loss"])
    return {"bot_id": bot_id, "period": period, "trades": trades, "wins": wins, "losses": trades - wins,
            "win_rate": wins / trades if trades else 0.0, "net_pnl": net,
            "profit_factor": float(gp / -gl) if gl < 0 else None, "figures": figures, "updated_at": now}

