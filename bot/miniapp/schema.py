"""The Mini App API's JSON, typed: each model is read from what a core/desk.py method returns.

Money and prices are JSON numbers (the page formats them; Decimal stays the desk's); times are ISO 8601
UTC. `openapi.yaml` beside this file documents the same shapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["admin", "viewer"]


class Model(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="ignore")


class Me(Model):
    id: int
    name: str
    role: Role


# --- overview ------------------------------------------------------------------------------------------------
class Figures(Model):
    """desk.stats(days): the /stats figures."""

    trades: int
    wins: int
    losses: int
    win_rate: float | None
    profit_factor: float | None
    net_pnl: float
    fees: float
    funding: float
    expectancy_usd: float | None
    expectancy_r: float | None
    max_drawdown: float
    max_drawdown_pct: float
    sharpe: float | None
    sortino: float | None
    avg_holding_h: float | None
    daily_avg: float | None
    return_days: int | None = None  # the daily returns Sharpe and Sortino rest on (few: flagged, as in /stats)
    newest_exit: datetime | None = None  # a window without trades: when the newest one closed (a replay's market time)


class Window(Model):
    label: str  # "24 h", "7 d", "30 d", "all": the last N days by the wall clock (UTC), as /stats N
    days: int | None
    figures: Figures


class Position(Model):
    trade_id: str
    symbol: str
    side: str
    status: str
    qty: float
    entry: float
    stop_loss: float | None
    take_profit: float | None
    last: float | None  # the last close the engine saw
    unrealized: float | None
    strategy: str | None


class BotCard(Model):
    """desk.bots(), desk.status() and desk.balance() of one bot: what /bots, /status and /balance say of it."""

    id: str
    mode: str | None  # paper | live | replay (a replay's record: readable, never traded)
    status: str | None  # running | paused | halted
    reason: str | None
    since: datetime | None
    equity: float | None  # open positions at their last price; a bot not running here: its saved state's
    peak: float | None = None
    drawdown_pct: float | None = None
    today: float | None = None  # net PnL of the trades closed since 00:00 UTC by the wall clock (as /balance)
    saved_at: datetime | None = None  # not running here: when the equity above was saved
    open_positions: int
    pending_recovery: int
    running_here: bool
    starting: bool = False  # held here, its state not restored yet (figures follow in a moment)
    positions: list[Position]


class Overview(Model):
    me: Me
    bots: list[BotCard]
    windows: list[Window]
    min_ratio_days: int  # Sharpe / Sortino over fewer daily returns are flagged (core.stats.MIN_RATIO_DAYS)
    as_of: datetime


# --- charts and tables ------------------------------------------------------------------------------------------
class Equity(Model):
    """core.stats.EquityCurve."""

    times_ms: list[int]
    equity: list[float]
    drawdown_pct: list[float]
    capital: float
    trades: int


class TradeRow(Model):
    id: str
    bot_id: str
    symbol: str
    strategy: str | None
    side: str
    qty: float
    entry_price: float
    exit_price: float | None
    entry_time: datetime
    exit_time: datetime
    exit_reason: str | None
    fees: float
    funding: float
    net_pnl: float | None
    realized_r: float | None


class TradePage(Model):
    rows: list[TradeRow]
    total: int
    more: bool
    next: str | None  # the `before` cursor of the next (older) page


class Facets(Model):
    bots: list[str]
    symbols: list[str]
    strategies: list[str]
    exit_reasons: list[str]


class PhantomGroup(Model):
    total: int
    wins: int
    win_rate: float | None
    avg_r: float | None
    sum_r: float


class PhantomStrategy(Model):
    strategy: str
    executed: PhantomGroup | None
    rejected: PhantomGroup | None
    blocked: PhantomGroup | None
    all: PhantomGroup | None


class Phantoms(Model):
    symbol: str | None
    strategies: list[PhantomStrategy]
    total: PhantomGroup | None
    what_if_rejected_r: float  # the R the rejected signals would have made


class OptionView(Model):
    name: str
    meaning: str


class RecoveryItem(Model):
    id: int
    bot_id: str | None
    kind: str
    critical: bool
    details: dict[str, str]  # flattened for display: nested values as "k=v, ..."
    warnings: list[str]
    options: list[OptionView]
    created_at: datetime | None
    expires_at: datetime | None


class ModelCheck(Model):
    """A challenger's walk-forward figures (ml_models.metrics.challenger)."""

    n: int | None = None
    brier: float | None = None
    auc: float | None = None
    lift_r: float | None = None
    accepted: int | None = None


class MLModel(Model):
    bot_id: str
    strategy: str
    version: int
    trained_at: datetime | None
    samples: int | None
    champion: bool
    promoted: bool | None
    why: str | None
    challenger: ModelCheck | None


class Promotion(Model):
    item_id: int
    bot_id: str
    strategy: str
    version: int
    why: str | None


class Models(Model):
    champions: list[MLModel]
    latest: list[MLModel]
    pending: list[Promotion]


class Job(Model):
    job_id: str
    last_status: str | None = None
    last_run: datetime | None = None
    next_run: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0


class Storage(Model):
    db_dialect: str | None = None
    db_bytes: int | None = None
    db_growth_bytes_per_day: int | None = None
    disk_free_pct: float | None = None
    disk_free_bytes: int | None = None
    journal_backlog: int | None = None
    journal_corrupt_lines: int | None = None
    alerts: list[str] = Field(default_factory=list)


class System(Model):
    status: str  # /health's: ok | error
    faults: list[str]
    database: str | None
    redis: str | None
    feed: str | None
    jobs: list[Job]
    rows: dict[str, int]
    candles: int
    candle_gaps: int
    storage: Storage


class RiskSetting(Model):
    key: str
    value: float | None
    low: float
    high: float
    low_open: bool = False  # the low end itself is refused (above `low`, not from it)
    danger: float | None  # at or above: the change says so in its confirmation


class BotRisk(Model):
    bot_id: str
    settings: list[RiskSetting]


# --- actions ----------------------------------------------------------------------------------------------------
class PauseRequest(Model):
    bot: str = "all"
    reason: str | None = Field(default=None, max_length=200)


class ResumeRequest(Model):
    bot: str = "all"


class CloseRequest(Model):
    symbol: str = Field(pattern=r"(?i)^(all|[a-z0-9]{2,20}usd[tc])$")  # as the chat's /close
    bot: str | None = None


class DecideRequest(Model):
    item_id: int
    option: str


class PromoteRequest(Model):
    bot: str
    strategy: str
    version: int


class RetrainRequest(Model):
    strategy: str | None = None  # every strategy with new outcomes when absent (as /retrain)
    bot: str | None = None


class RiskRequest(Model):
    key: str
    value: str = Field(max_length=32)
    bot: str | None = None


class Confirmation(Model):
    """What the second call would do; send `token`, `action` and `target` back to /api/confirm."""

    action: str
    target: str
    token: str
    title: str
    lines: list[str]
    expires_in_s: int


class ConfirmRequest(Model):
    action: str
    target: str
    token: str
    cancel: bool = False


class ActionResult(Model):
    ok: bool
    message: str
    lines: list[str] = Field(default_factory=list)


class Error(Model):
    error: str
