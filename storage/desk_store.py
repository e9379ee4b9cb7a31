"""The desk's reads and writes on the database (core.desk.DeskStore)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import desc, func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from core.config import BotConfig, BotStatus
from core.decisions import Decided, Option, RecoveryDraft, RecoveryKind
from core.desk import (
    Actor,
    BotRow,
    DbStats,
    JobStatus,
    MLStats,
    ModelDoc,
    PendingItem,
    SavedState,
    TradeFacets,
    TradePage,
    TradeQuery,
    TradeRow,
)
from core.ledger import TradeRecord
from core.market.series import CandleSeries
from core.phantom import PhantomStats
from core.recovery import Effect
from core.stats import Summary, TradeFacts
from storage.bots import config_of, set_status, upsert_bot
from storage.candle_store import CandleStore
from storage.closed_trades import ClosedTrades, summarize_columns
from storage.db import cells, session_factory
from storage.engine_store import SqlEngineStore
from storage.instances import trader_of
from storage.models import Bot, BotState, JobRun, MLModel, PhantomTrade, Trade
from storage.recovery import RecoveryBook, audit


class SqlDeskStore:
    def __init__(self, db: AsyncEngine) -> None:
        self.db = db
        self.sessions = session_factory(db)
        self.recovery_book = RecoveryBook(db)
        self.phantoms = SqlEngineStore(db)
        self.candles = CandleStore(db)
        self.closed = ClosedTrades(db)  # /stats without scanning the trades table (storage/closed_trades.py)
        self.storage_fn: Any = None  # the host's storage figures (disk, journal backlog, growth)
        self._all_time: dict[tuple[str | None, Decimal], tuple[Any, Summary]] = {}

    async def bots(self) -> list[BotRow]:
        async with self.db.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT bot_id, name, mode, status, status_reason, status_since, open_trades, pending_recovery, "
                "equity FROM bot_status_view ORDER BY bot_id"))).all()
            owners = {r.id: r for r in (await conn.execute(
                select(Bot.id, Bot.owner_instance, Bot.last_heartbeat))).all()}
        now = datetime.now(UTC)
        return [BotRow(r.bot_id, r.name, r.mode, BotStatus(r.status), r.status_reason, _utc(r.status_since),
                       int(r.open_trades or 0), int(r.pending_recovery or 0),
                       None if r.equity is None else Decimal(str(r.equity)),
                       trader_of(o.owner_instance, _utc(o.last_heartbeat), now)
                       if (o := owners.get(r.bot_id)) is not None else None) for r in rows]

    async def bot_config(self, bot_id: str) -> BotConfig | None:
        async with self.sessions() as session:
            row = await session.get(Bot, bot_id)
            return None if row is None else config_of(row)

    async def set_status(self, bot_id: str, status: str, reason: str | None, actor: str) -> bool:
        async with self.sessions.begin() as session:
            changed = await set_status(session, bot_id, status, reason)
            if changed:
                audit(session, actor, status if status != "running" else "resume", bot_id, {"reason": reason})
            return changed

    async def save_config(self, config: BotConfig, actor: str, change: dict[str, Any]) -> None:
        async with self.sessions.begin() as session:
            await upsert_bot(session, config)
            audit(session, actor, "risk_set", config.id, change)

    async def facts(self, bot_id: str | None, since: datetime | None) -> list[TradeFacts]:
        query = select(Trade.id, Trade.symbol, Trade.strategy, Trade.entry_time, Trade.exit_time, Trade.net_pnl,
                       Trade.fees, Trade.realized_r, Trade.funding).where(Trade.status == "closed")
        if bot_id is not None:
            query = query.where(Trade.bot_id == bot_id)
        if since is not None:
            query = query.where(Trade.exit_time >= since)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query.order_by(Trade.exit_time, Trade.id))).all()
        return [TradeFacts(*cells(r)) for r in rows]

    async def warm(self) -> None:
        await self.closed.columns(None)

    async def summary(self, bot_id: str | None, since: datetime | None, capital: Decimal) -> Summary:
        """core.stats.summarize of the closed trades, from the in-memory columns (same figures, same shape). All
        time is kept with the columns it was computed from: the same columns object, the same figures (a trade
        closing makes new columns); the Mini App's overview asks every few seconds."""
        columns = await self.closed.columns(bot_id)
        if since is not None:
            return summarize_columns(columns.since(since), capital)
        kept = self._all_time.get((bot_id, capital))
        if kept is None or kept[0] is not columns:
            kept = self._all_time[(bot_id, capital)] = (columns, summarize_columns(columns, capital))
        return kept[1].copy()

    async def candles_for(self, symbol: str, interval: str, days: int | None,
                          limit: int) -> tuple[CandleSeries, list[TradeRecord]]:
        """The newest `limit` candles (or the last `days` before the newest one) and the trades of the
        symbol that entered or exited among them, or are still open."""
        if days is None:
            series = await self.candles.load(symbol, interval, limit)
        else:
            newest = await self.candles.last_open_time(symbol, interval)
            series = (await self.candles.series(symbol, interval, newest - timedelta(days=days))
                      if newest is not None else await self.candles.load(symbol, interval, 0))
        if not len(series):
            return series, []
        start = datetime.fromtimestamp(int(series.open_ms[0]) / 1000, tz=UTC)
        cols = [c for c in Trade.__table__.columns if c.name not in ("created_at", "updated_at")]
        query = select(*cols).where(Trade.symbol == symbol, Trade.status != "cancelled",
                                    (Trade.exit_time >= start) | (Trade.entry_time >= start) |
                                    (Trade.status == "open")).order_by(Trade.entry_time, Trade.id)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return series, [TradeRecord(**{c.name: getattr(r, c.name) for c in cols}) for r in rows]

    async def recent_trades(self, bot_id: str | None, n: int) -> list[TradeRow]:
        """The newest closed trades: the first page of the trades list (without its count)."""
        query = TradeQuery(bot_id=bot_id, limit=n)
        async with self.db.connect() as conn:
            rows = (await conn.execute(_page(query, _where(query)))).all()
        return [TradeRow(*cells(r)) for r in rows[:n]]

    async def trades_page(self, query: TradeQuery) -> TradePage:
        """One keyset page on (exit_time, id) descending, and the filter's count."""
        where = _where(query)
        async with self.db.connect() as conn:
            rows = (await conn.execute(_page(query, where))).all()
            total = (await conn.execute(select(func.count()).select_from(Trade).where(*where))).scalar_one()
        return TradePage([TradeRow(*cells(r)) for r in rows[:query.limit]], int(total), len(rows) > query.limit)

    async def trade_facets(self, bot_id: str | None) -> TradeFacets:
        query = select(Trade.symbol, Trade.strategy, Trade.exit_reason).where(Trade.status == "closed").distinct()
        if bot_id is not None:
            query = query.where(Trade.bot_id == bot_id)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return TradeFacets(sorted({r.symbol for r in rows}), sorted({r.strategy for r in rows if r.strategy}),
                           sorted({r.exit_reason for r in rows if r.exit_reason}))

    async def pnl_series(self, bot_id: str | None, since: datetime | None) -> tuple[list[int], list[float]]:
        """From the closed trades' cached columns, like /stats: no table scan per chart."""
        columns = (await self.closed.columns(bot_id)).since(since)
        return (columns.exit_us // 1000).tolist(), columns.pnl.tolist()

    async def phantom_stats(self, bot_id: str | None) -> PhantomStats:
        stats = PhantomStats()
        for bid in ([bot_id] if bot_id else [b.id for b in await self.bots()]):
            for p in await self.phantoms.closed_phantoms(bid):
                stats.add(p)
        return stats

    async def phantom_outcomes(self, bot_id: str | None, since: datetime | None) -> list[tuple[datetime, str, bool]]:
        query = select(PhantomTrade.exit_time, PhantomTrade.strategy, PhantomTrade.realized_r).where(
            PhantomTrade.status == "closed", PhantomTrade.exit_reason != "gap")
        if bot_id is not None:
            query = query.where(PhantomTrade.bot_id == bot_id)
        if since is not None:
            query = query.where(PhantomTrade.exit_time >= since)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query.order_by(PhantomTrade.exit_time, PhantomTrade.id))).all()
        return [(r.exit_time, r.strategy, (r.realized_r or 0) > 0) for r in rows]

    async def recovery_pending(self, bot_id: str | None = None) -> list[PendingItem]:
        return [{"id": i.id, "bot_id": i.bot_id, "kind": RecoveryKind(i.kind), "critical": i.critical,
                 "details": i.details, "options": [Option(o) for o in i.options], "created_at": i.created_at,
                 "expires_at": i.expires_at, "announced_at": i.announced_at}
                for i in await self.recovery_book.pending(bot_id)]

    async def recovery_announced(self, item_id: int) -> None:
        await self.recovery_book.announced(item_id)

    async def saved_state(self, bot_id: str) -> SavedState | None:
        async with self.sessions() as session:
            row = await session.scalar(select(BotState).where(BotState.bot_id == bot_id)
                                       .order_by(desc(BotState.taken_at)).limit(1))
        return None if row is None else SavedState(row.equity, row.peak_equity, Decimal(repr(row.drawdown_pct)),
                                                   _utc(row.taken_at) or row.taken_at)

    async def decide(self, item_id: int, decision: str, actor: Actor) -> Decided:
        return await self.recovery_book.decide(item_id, decision, actor.label, actor.id)

    async def settle(self, item_id: int, effect: Effect, actor: str,
                     follow_up: list[RecoveryDraft]) -> list[PendingItem]:
        await self.recovery_book.record_effect(item_id, effect.as_json(), actor)
        item = await self.recovery_book.get(item_id)
        created = []
        for draft in follow_up:
            new_id, new = await self.recovery_book.raise_item(
                item.bot_id if item else None, draft.kind, dedupe_key=draft.dedupe_key, details=draft.details,
                options=draft.options, critical=draft.critical)
            if new:
                created.append(new_id)
        return [i for i in await self.recovery_pending() if i["id"] in created]

    async def close_halt_items(self, bot_id: str, actor: Actor) -> None:
        for item in await self.recovery_book.pending(bot_id):
            if item.kind == RecoveryKind.DRAWDOWN_HALT:
                done = await self.recovery_book.decide(item.id, Option.RESUME, actor.label, actor.id)
                if done.ok:
                    await self.recovery_book.record_effect(item.id, {"state": "done", "text": "resumed by command"},
                                                           actor.label)

    async def db_stats(self) -> DbStats:
        stats = await self.candles.stats()
        async with self.db.connect() as conn:
            counts = {}
            for table in ("signals", "phantom_trades", "trades", "orders", "recovery_items", "audit_log", "job_runs"):
                counts[table] = int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar() or 0)
        storage = await self.storage_fn() if self.storage_fn is not None else {}
        return DbStats(stats, counts, storage)

    async def job_runs(self) -> list[JobStatus]:
        async with self.sessions() as session:
            latest = select(JobRun.job_id, func.max(JobRun.id).label("id")).group_by(JobRun.job_id).subquery()
            rows = (await session.scalars(select(JobRun).join(latest, JobRun.id == latest.c.id)
                                          .order_by(JobRun.job_id))).all()
        return [JobStatus(r.job_id, r.status, _utc(r.started_at), None, r.error) for r in rows]

    async def ml_stats(self, bot_id: str | None) -> MLStats:
        query = select(MLModel).where(MLModel.is_champion.is_(True)).order_by(MLModel.bot_id, MLModel.strategy)
        if bot_id is not None:
            query = query.where(MLModel.bot_id == bot_id)
        # the newest model of each strategy too (champion or not): its report shows how the last
        # challenger validated, and its calibration is what /chart calibration draws without a champion
        newest = select(MLModel.bot_id, MLModel.strategy, func.max(MLModel.version).label("version")).group_by(
            MLModel.bot_id, MLModel.strategy)
        if bot_id is not None:
            newest = newest.where(MLModel.bot_id == bot_id)
        sub = newest.subquery()
        latest_query = select(MLModel).join(sub, (MLModel.bot_id == sub.c.bot_id) & (
            MLModel.strategy == sub.c.strategy) & (MLModel.version == sub.c.version)).order_by(
            MLModel.bot_id, MLModel.strategy)
        async with self.sessions() as session:
            rows = (await session.scalars(query)).all()
            latest = (await session.scalars(latest_query)).all()

        def doc(r: MLModel) -> ModelDoc:
            return {"bot_id": r.bot_id, "strategy": r.strategy, "version": r.version, "trained_at": r.trained_at,
                    "samples": r.n_samples, "metrics": r.metrics, "champion": bool(r.is_champion)}

        return {"models": [doc(r) for r in rows], "latest": [doc(r) for r in latest]}

    async def audit(self, actor: str, action: str, bot_id: str | None, details: dict[str, Any]) -> None:
        async with self.sessions.begin() as session:
            audit(session, actor, action, bot_id, _jsonable(details))


def _where(query: TradeQuery) -> list[Any]:
    """The closed trades a query's filters keep."""
    where: list[Any] = [Trade.status == "closed"]
    for column, wanted in ((Trade.bot_id, query.bot_id), (Trade.symbol, query.symbol),
                           (Trade.strategy, query.strategy), (Trade.exit_reason, query.exit_reason)):
        if wanted is not None:
            where.append(column == wanted)
    return where


def _page(query: TradeQuery, where: list[Any]) -> Any:
    """The page's rows, newest exit first, one more than the limit (is there a next page?)."""
    page = select(*TRADE_ROW).where(*where)
    if query.before is not None:
        page = page.where(tuple_(Trade.exit_time, Trade.id) < tuple_(*query.before))
    return page.order_by(desc(Trade.exit_time), desc(Trade.id)).limit(query.limit + 1)


# the columns of core.desk.TradeRow, in its order
TRADE_ROW = (Trade.id, Trade.bot_id, Trade.symbol, Trade.strategy, Trade.side, Trade.qty, Trade.entry_price,
             Trade.exit_price, Trade.entry_time, Trade.exit_time, Trade.exit_reason, Trade.fees, Trade.funding,
             Trade.net_pnl, Trade.realized_r)


def _utc(value: Any) -> datetime | None:
    """A timestamp a view returns (SQLite: text without its zone) as an aware UTC datetime."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal | datetime):
        return str(value)
    return value
