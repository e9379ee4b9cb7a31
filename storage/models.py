"""The data model (ARCHITECTURE.md section 4): one schema for SQLite and PostgreSQL.

Every row that belongs to a bot carries `bot_id`. Times are UTC-aware; prices, quantities and money
are `Numeric` here and `Decimal` at the exchange boundary. Status-like columns are short strings with
CHECK constraints so a typo can never be stored.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.types import Money, UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BOT_STATUSES = ("running", "paused", "halted")
MODES = ("paper", "live", "replay")
TRADE_MODES = ("paper", "live", "replay")
SIDES = ("long", "short")
SIGNAL_ACTIONS = ("EXECUTED", "REJECTED", "BLOCKED")
PHANTOM_STATUSES = ("active", "closed")
PHANTOM_OUTCOMES = ("win", "loss", "timeout")
TRADE_STATUSES = ("open", "closed", "cancelled")
EXIT_REASONS = ("tp", "sl", "trailing", "manual", "reconciled", "reconciled_manual", "liquidation", "timeout", "gap")
ORDER_SIDES = ("Buy", "Sell")
STATS_PERIODS = ("all_time", "7d", "30d")
EQUITY_KINDS = ("scheduled", "manual", "initial", "reset")
RECOVERY_STATUSES = ("pending", "approved", "rejected", "expired")
JOB_STATUSES = ("running", "ok", "error", "missed")


# 64-bit row ids; SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY
ROW_ID = BigInteger().with_variant(Integer, "sqlite")


def _one_of(column: str, values: tuple[str, ...], name: str | None = None, nullable: bool = False) -> CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    text = f"{column} IN ({listed})" + (f" OR {column} IS NULL" if nullable else "")
    return CheckConstraint(text, name=name or column)


def table_of(model: type[Base]) -> Table:
    """A mapped class's Table (SQLAlchemy types `__table__` as any FROM clause)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        Decimal: Money,
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
        date: Date(),
    }


class Bot(Base):
    """One managed bot: what it trades, how much it risks, and whether it is running."""

    __tablename__ = "bots"
    __table_args__ = (
        _one_of("status", BOT_STATUSES),
        _one_of("mode", MODES),
        CheckConstraint("capital > 0", name="capital_positive"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    symbols: Mapped[list[Any]]
    intervals: Mapped[list[Any]]
    strategies: Mapped[dict[str, Any]]  # strategy name -> parameters
    capital: Mapped[Decimal]
    risk_pct: Mapped[Decimal | None]  # risk per trade, % of equity ...
    risk_usd: Mapped[Decimal | None]  # ... or a fixed amount
    max_leverage: Mapped[Decimal]
    max_positions: Mapped[int]
    max_position_notional: Mapped[Decimal | None]
    trailing_stop_pct: Mapped[Decimal | None]
    breakeven_at_r: Mapped[Decimal | None]
    phantom_timeout_candles: Mapped[int] = mapped_column(default=96)
    drawdown_guard_pct: Mapped[Decimal | None]
    daily_loss_limit_pct: Mapped[Decimal | None]
    ml_threshold: Mapped[float] = mapped_column(default=0.0)  # minimum EV in R
    ml_min_p: Mapped[float] = mapped_column(default=0.0)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # breakers, cooldowns, extras
    mode: Mapped[str] = mapped_column(String(8), default="paper")
    status: Mapped[str] = mapped_column(String(8), default="running")
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_since: Mapped[datetime | None]  # when the status last changed (a halt shows since when)
    last_heartbeat: Mapped[datetime | None]
    owner_instance: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class BotState(Base):
    """A snapshot of a bot's in-memory state, taken every few minutes and on shutdown."""

    __tablename__ = "bot_states"
    __table_args__ = (Index(None, "bot_id", "taken_at"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    taken_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(16), default="scheduled")
    equity: Mapped[Decimal]
    peak_equity: Mapped[Decimal]
    drawdown_pct: Mapped[float]
    halted: Mapped[bool] = mapped_column(default=False)
    halt_reason: Mapped[str | None] = mapped_column(Text)
    open_positions: Mapped[list[Any]] = mapped_column(default=list)
    trailing_stops: Mapped[dict[str, Any]] = mapped_column(default=dict)
    counters: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Candle(Base):
    """Closed OHLCV candles, one row per (symbol, interval, open_time)."""

    __tablename__ = "candles"

    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    interval: Mapped[str] = mapped_column(String(8), primary_key=True)
    open_time: Mapped[datetime] = mapped_column(primary_key=True)
    open: Mapped[Decimal]
    high: Mapped[Decimal]
    low: Mapped[Decimal]
    close: Mapped[Decimal]
    volume: Mapped[Decimal]
    turnover: Mapped[Decimal | None]


class FundingRate(Base):
    """A perpetual's funding settlements, one row per (symbol, settlement time): at each, a position pays
    (rate > 0, long) or receives `size × mark × rate`. Backfilled from Bybit's public history."""

    __tablename__ = "funding_rates"

    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    time: Mapped[datetime] = mapped_column(primary_key=True)
    rate: Mapped[Decimal]


class Signal(Base):
    """Every signal a strategy emitted, with what the desk did about it and why."""

    __tablename__ = "signals"
    __table_args__ = (
        _one_of("action", SIGNAL_ACTIONS),
        _one_of("side", SIDES),
        Index(None, "bot_id", "time"),
        Index(None, "bot_id", "strategy", "time"),
        Index(None, "symbol", "time"),
        Index(None, "created_at"),
        Index(None, "trade_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # deterministic, see core
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    symbol: Mapped[str] = mapped_column(String(32))
    interval: Mapped[str] = mapped_column(String(8))
    strategy: Mapped[str] = mapped_column(String(32))
    strategy_version: Mapped[str | None] = mapped_column(String(12))  # hash of its source; NULL before 0004
    side: Mapped[str] = mapped_column(String(5))
    time: Mapped[datetime]  # close time of the candle that produced it
    entry: Mapped[Decimal]
    stop_loss: Mapped[Decimal]
    take_profit: Mapped[Decimal]
    features: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ml_score: Mapped[float | None]
    ml_ev: Mapped[float | None]
    model_version: Mapped[int | None]
    action: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(Text)
    trade_id: Mapped[str | None] = mapped_column(String(40))  # deterministic (core.ledger.trade_id); no FK
    created_at: Mapped[datetime]


class PhantomTrade(Base):
    """The shadow trade of one signal, followed to its outcome whether the desk took it or not."""

    __tablename__ = "phantom_trades"
    __table_args__ = (
        _one_of("status", PHANTOM_STATUSES),
        _one_of("outcome", PHANTOM_OUTCOMES, nullable=True),
        _one_of("side", SIDES),
        Index(None, "bot_id", "status"),
        Index(None, "bot_id", "strategy", "exit_time"),
        Index(None, "symbol", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    signal_id: Mapped[str] = mapped_column(ForeignKey("signals.id", ondelete="CASCADE"), unique=True)
    symbol: Mapped[str] = mapped_column(String(32))
    interval: Mapped[str] = mapped_column(String(8))
    strategy: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(5))
    entry: Mapped[Decimal]
    stop_loss: Mapped[Decimal]
    take_profit: Mapped[Decimal]
    opened_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(8), default="active")
    outcome: Mapped[str | None] = mapped_column(String(8))
    exit_reason: Mapped[str | None] = mapped_column(String(16))
    exit_price: Mapped[Decimal | None]
    exit_time: Mapped[datetime | None]
    realized_r: Mapped[float | None]
    pnl_pct: Mapped[float | None]
    mfe_r: Mapped[float] = mapped_column(default=0.0)
    mae_r: Mapped[float] = mapped_column(default=0.0)
    tp1_time: Mapped[datetime | None]
    candles_seen: Mapped[int] = mapped_column(default=0)
    funding_r: Mapped[float] = mapped_column(default=0.0, server_default="0")  # in realized_r once closed
    was_executed: Mapped[bool] = mapped_column(default=False)
    action: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(Text)
    ml_score: Mapped[float | None]
    ml_ev: Mapped[float | None]
    features: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime]


class Trade(Base):
    """A position's lifecycle, from entry fill to exit."""

    __tablename__ = "trades"
    __table_args__ = (
        _one_of("status", TRADE_STATUSES),
        _one_of("mode", TRADE_MODES),
        _one_of("side", SIDES),
        _one_of("exit_reason", EXIT_REASONS, nullable=True),
        Index(None, "bot_id", "status"),
        Index(None, "bot_id", "exit_time"),
        Index(None, "symbol", "status"),
        Index(None, "status", "exit_time", "id"),  # closed trades newest first: trades pages, the newest trade
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    # no FK: the ledger records a trade the moment it fills, before the engine's batch stores its signal
    signal_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    symbol: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str | None] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(5))
    status: Mapped[str] = mapped_column(String(10), default="open")
    mode: Mapped[str] = mapped_column(String(8))
    qty: Mapped[Decimal]
    leverage: Mapped[Decimal]
    entry_price: Mapped[Decimal]
    entry_time: Mapped[datetime]
    stop_loss: Mapped[Decimal | None]
    take_profit: Mapped[Decimal | None]
    exit_price: Mapped[Decimal | None]
    exit_time: Mapped[datetime | None]
    exit_reason: Mapped[str | None] = mapped_column(String(24))
    fees: Mapped[Decimal] = mapped_column(default=Decimal(0))
    gross_pnl: Mapped[Decimal | None]
    net_pnl: Mapped[Decimal | None]  # gross − fees + funding
    pnl_pct: Mapped[float | None]
    realized_r: Mapped[float | None]
    # received (+) / paid (−) while open; server defaults: rows written by older code or by hand stay valid
    funding: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    exit_estimated: Mapped[bool] = mapped_column(default=False, server_default=false())  # exit at a mark price
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Order(Base):
    """An order sent (or about to be sent) to a broker; `order_link_id` makes sending idempotent."""

    __tablename__ = "orders"
    __table_args__ = (
        _one_of("side", ORDER_SIDES),
        Index(None, "bot_id", "status"),
        Index(None, "trade_id"),
        Index(None, "exchange_order_id"),
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    order_link_id: Mapped[str] = mapped_column(String(36), unique=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    trade_id: Mapped[str | None] = mapped_column(ForeignKey("trades.id", ondelete="SET NULL"))
    exchange_order_id: Mapped[str | None] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    order_type: Mapped[str] = mapped_column(String(16))  # Market, Limit, TakeProfit, StopLoss
    qty: Mapped[Decimal]
    price: Mapped[Decimal | None]
    status: Mapped[str] = mapped_column(String(24))
    reduce_only: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]
    filled_at: Mapped[datetime | None]
    filled_qty: Mapped[Decimal | None]
    avg_price: Mapped[Decimal | None]
    fee: Mapped[Decimal | None]


class TradeStatsCache(Base):
    """Headline figures per bot and period, refreshed in the same transaction as a trade close."""

    __tablename__ = "trade_stats_cache"
    __table_args__ = (_one_of("period", STATS_PERIODS),)

    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    trades: Mapped[int] = mapped_column(default=0)
    wins: Mapped[int] = mapped_column(default=0)
    losses: Mapped[int] = mapped_column(default=0)
    win_rate: Mapped[float] = mapped_column(default=0.0)
    net_pnl: Mapped[Decimal] = mapped_column(default=Decimal(0))
    profit_factor: Mapped[float | None]
    figures: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime]


class PerformanceSnapshot(Base):
    """One row per bot and UTC day."""

    __tablename__ = "performance_snapshots"
    __table_args__ = (UniqueConstraint("bot_id", "date"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    date: Mapped[date]
    equity: Mapped[Decimal]
    daily_pnl: Mapped[Decimal]
    total_pnl: Mapped[Decimal]
    trades: Mapped[int] = mapped_column(default=0)
    wins: Mapped[int] = mapped_column(default=0)
    losses: Mapped[int] = mapped_column(default=0)
    win_rate: Mapped[float] = mapped_column(default=0.0)
    sharpe: Mapped[float | None]
    max_drawdown: Mapped[float | None]
    created_at: Mapped[datetime]


class EquitySnapshot(Base):
    __tablename__ = "equity_snapshots"
    __table_args__ = (_one_of("kind", EQUITY_KINDS), Index(None, "bot_id", "taken_at"))

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    taken_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(12))
    equity: Mapped[Decimal]
    balance: Mapped[Decimal]
    unrealized_pnl: Mapped[Decimal] = mapped_column(default=Decimal(0))
    composition: Mapped[dict[str, Any]] = mapped_column(default=dict)


class MLModel(Base):
    """A trained filter: signed artifact bytes; at most one champion per bot and strategy."""

    __tablename__ = "ml_models"
    __table_args__ = (
        UniqueConstraint("bot_id", "strategy", "version"),
        Index(None, "bot_id", "strategy", "is_champion"),
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    strategy: Mapped[str] = mapped_column(String(32))
    version: Mapped[int]
    trained_at: Mapped[datetime]
    n_samples: Mapped[int]
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    artifact: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    hmac: Mapped[str] = mapped_column(String(64))
    is_champion: Mapped[bool] = mapped_column(default=False)
    promoted_at: Mapped[datetime | None]
    promoted_by: Mapped[str | None] = mapped_column(String(64))


class RecoveryItem(Base):
    """A decision the desk must not take alone, waiting for an admin."""

    __tablename__ = "recovery_items"
    __table_args__ = (
        _one_of("status", RECOVERY_STATUSES),
        Index(None, "bot_id", "status"),
        Index(None, "dedupe_key", "status"),
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    bot_id: Mapped[str | None] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    critical: Mapped[bool] = mapped_column(default=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    options: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    decision: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    decided_by: Mapped[int | None] = mapped_column(BigInteger)
    decided_at: Mapped[datetime | None]
    effect: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what the decision did (core/recovery.py Effect)
    announced_at: Mapped[datetime | None]  # first delivered with its buttons: a restart does not send it again


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "at"), Index(None, "bot_id", "at"))

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))  # "tg:<user id>", "system", "job:<id>", "console"
    bot_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DeskInstance(Base):
    """A desk process on this database: its heartbeat and the bots it trades. Placement reads the live ones
    to share the bots out (core/placement.py); a clean stop deletes the row, a killed process's row ages out."""

    __tablename__ = "desk_instances"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime] = mapped_column(index=True)
    bots: Mapped[list[Any]]  # ids of the bots whose lease it holds


class JobRun(Base):
    __tablename__ = "job_runs"
    __table_args__ = (_one_of("status", JOB_STATUSES), Index(None, "job_id", "started_at"))

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64))
    bot_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(8))
    error: Mapped[str | None] = mapped_column(Text)
