"""The operator API: every command of the desk as one async method returning plain data.

Telegram, the console and the jobs call this and nothing else (a transport parses, authorizes, calls
the desk, renders). Mutating methods re-check the actor's role here too: a transport that forgets to
authorize still cannot pause a bot for a viewer. Time comes from the injected clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from annotated_types import Ge, Gt, Le

from core.config import BotConfig, BotMode, BotStatus
from core.decisions import Decided, Option, RecoveryDraft, RecoveryKind
from core.engine import Decision, Engine
from core.ledger import TradeRecord
from core.lifecycle import HELD_STATES, LIVE_STATES, TradeStatus
from core.market.series import CandleSeries
from core.ml.verdict import worth_asking
from core.phantom import ActionFigures, PhantomStats
from core.recovery import Effect, Item, Outcome
from core.signal import Side
from core.stats import EquityCurve, Summary, TradeFacts, breakdown, daily_pnl, equity_curve, equity_drawdown
from core.strategies import StrategyParams
from core.strategies.regime import Regime, regime_of
from core.trader import Closing, Trader
from core.universe import UniverseView

Role = Literal["admin", "viewer", "system"]


@dataclass(frozen=True)
class Actor:
    id: int | None
    name: str
    role: Role

    @property
    def label(self) -> str:
        return f"tg:{self.id}" if self.id is not None else self.name

    @property
    def admin(self) -> bool:
        return self.role in ("admin", "system")


SYSTEM = Actor(None, "system", "system")


class NotAllowed(PermissionError):
    pass


class BadArgument(ValueError):
    """A command argument that is wrong; the message says what and how to write it."""


# /risk set KEY VALUE: what may be changed, within the range BotConfig declares (one definition of the rule),
# and from where on it needs a confirmation
@dataclass(frozen=True)
class RiskKey:
    low: Decimal
    high: Decimal
    danger: Decimal | None  # at or above this, a confirmation button is needed
    integer: bool = False
    low_open: bool = False  # the low end itself is refused (gt, not ge)

    @classmethod
    def of(cls, key: str, danger: Decimal | None) -> RiskKey:
        field = BotConfig.model_fields[key]
        ge = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
        gt = next((m.gt for m in field.metadata if isinstance(m, Gt)), None)
        le = next(m.le for m in field.metadata if isinstance(m, Le))
        return cls(Decimal(str(ge if ge is not None else gt)), Decimal(str(le)), danger,
                   integer=field.annotation is int, low_open=ge is None)

    def contains(self, value: Decimal) -> bool:
        return (self.low < value if self.low_open else self.low <= value) and value <= self.high

    def describe(self) -> str:
        return f"above {self.low} and at most {self.high}" if self.low_open else f"between {self.low} and {self.high}"


_DANGER = {"risk_pct": 3, "max_leverage": 20, "max_positions": 20, "drawdown_guard_pct": 40, "daily_loss_limit_pct": 15,
           "ml_threshold": None, "trailing_stop_pct": None, "breakeven_at_r": None}
RISK_KEYS: dict[str, RiskKey] = {k: RiskKey.of(k, None if d is None else Decimal(d)) for k, d in _DANGER.items()}


@dataclass(frozen=True)
class RecoveryResult:
    """A recovery decision as the desk took it, and what it did."""

    decided: Decided
    option: str
    effect: Effect | None = None
    follow_up: list[PendingItem] = field(default_factory=list)  # items the effect raised (their buttons)


class StatsDoc(Summary):
    """/stats: the summary of a bot's (or every bot's) closed trades over a window."""

    bot_id: str  # "all" for every bot
    days: int | None
    capital: Decimal
    newest_exit: NotRequired[datetime | None]  # a window without trades: when the newest one closed


class PendingItem(TypedDict):
    """A recovery item waiting for an admin's decision, and its buttons."""

    id: int
    bot_id: str | None  # None: the desk's, not one bot's
    kind: RecoveryKind
    critical: bool
    details: dict[str, Any]
    options: list[Option]
    created_at: datetime
    expires_at: datetime | None
    announced_at: datetime | None


@dataclass(frozen=True)
class JobStatus:
    """/jobs: a job's last run and, where a scheduler runs it here, its next one."""

    job_id: str
    last_status: str | None  # ok | error | missed | running; None: not run yet
    last_run: datetime | None
    next_run: datetime | None  # None: no scheduler in this process (the console reads the recorded runs)
    last_error: str | None
    consecutive_failures: int = 0


@dataclass(frozen=True)
class RiskRow:
    """/risk of one bot: every setting `/risk set` may change (RISK_KEYS), and the two it shows beside them."""

    bot_id: str
    settings: dict[str, Decimal | int | float | None]  # key -> value, in RISK_KEYS order
    risk_usd: Decimal | None
    max_position_notional: Decimal | None


@dataclass(frozen=True)
class PhantomReport:
    """/phantom_stats: closed shadow trades of every strategy (or of one symbol), taken vs not."""

    symbol: str | None
    all: ActionFigures
    by_strategy: dict[str, ActionFigures]


@dataclass(frozen=True)
class IntervalView:
    """/analysis of one interval: the last close, the regime the strategies see, the indicators."""

    close: float
    time: datetime  # when that candle closed
    candles: int  # seen so far
    regime: Regime
    indicators: dict[str, float]


@dataclass(frozen=True)
class Analysis:
    """/analysis SYMBOL: what the bot trading it sees now, per interval, and its latest signal per strategy."""

    bot_id: str
    symbol: str
    intervals: dict[str, IntervalView]
    latest_signals: dict[str, Decision]


@dataclass(frozen=True, slots=True)
class IntervalStats:
    interval: str
    symbols: int
    candles: int
    oldest: datetime  # open time of the oldest candle of this interval
    newest: datetime


@dataclass(frozen=True, slots=True)
class CandleStats:
    """The candle store's figures behind `/db_stats`."""

    backend: str  # "postgresql" | "sqlite"
    symbols: int
    candles: int
    intervals: list[IntervalStats]
    gaps: int  # holes inside stored series (see `CandleStore.gaps`)
    missing_candles: int  # candles those holes lack
    table_bytes: int | None  # the candles table with its indexes (None where the backend cannot say)
    database_bytes: int  # PostgreSQL: pg_database_size; SQLite: page_count * page_size
    file_bytes: int | None = None  # SQLite: the database file plus its WAL on disk


@dataclass(frozen=True)
class DbStats:
    """/db_stats: the candle store's figures, rows per table, and the storage document (disk, database size)."""

    candles: CandleStats
    rows: dict[str, int]
    storage: dict[str, Any]


class ModelDoc(TypedDict):
    bot_id: str
    strategy: str
    version: int
    trained_at: datetime | None
    samples: int | None
    metrics: dict[str, Any]  # what the training recorded: walk-forward figures, the gate's verdict, calibration
    champion: bool


class MLStats(TypedDict):
    """/ml_stats: the champions in force, and the newest model of each strategy (champion or not)."""

    models: list[ModelDoc]
    latest: list[ModelDoc]


class BotHealth(TypedDict):
    """A bot in /health: its row, and where this process trades it, how far it is."""

    id: str
    status: str
    reason: str | None
    since: str | None
    mode: str
    open_trades: int
    traded_by: str | None
    running_here: NotRequired[bool]
    error: NotRequired[str | None]
    candles: NotRequired[int]
    skipped_before_checkpoint: NotRequired[int]  # only warmed: the bot had traded them before
    backlog: NotRequired[int]  # candles queued, not yet processed
    unsaved: NotRequired[int]  # processed, not yet in the database
    fault: NotRequired[str | None]  # trades held in memory: no new positions until it clears


class HealthDoc(TypedDict):
    """GET /health (and /health in Telegram): 200 only when `status` is ok."""

    status: str  # ok | error
    faults: list[str]
    candles_refused: dict[str, int]
    version: str
    database: str
    redis: str
    scheduler: str
    telegram: str | None
    telegram_refused: dict[str, Any] | None
    bots: list[BotHealth]
    newest_candle_age_s: float | None
    uptime_s: float
    instance: str
    leading: bool  # runs the desk-wide jobs (backup, daily report)
    storage: dict[str, Any]
    standby_bots: list[str]
    feed: str
    feed_restarts: int


@dataclass(frozen=True)
class PnlChart:
    points: list[tuple[datetime, float]]
    capital: Decimal
    daily: dict[date, float]


@dataclass(frozen=True)
class SymbolChart:
    """/chart SYMBOL: its newest candles on the bot's slow interval, and the bot's trades among them."""

    symbol: str
    interval: str
    series: CandleSeries
    trades: list[TradeRecord]


@dataclass(frozen=True)
class BotRow:
    """A bot as the database has it: its row and status, open trades, pending recovery items, last saved
    equity, and the process whose heartbeat says it trades the bot now."""

    id: str
    name: str
    mode: BotMode
    status: BotStatus
    reason: str | None
    status_since: datetime | None
    open_trades: int
    pending_recovery: int
    equity: Decimal | None
    traded_by: str | None = None


@dataclass(frozen=True)
class Status:
    """status / reason / since as the operator must see them: a running trader's own halt or pause wins
    over a database row that has not caught up (a halt is never shown as "running")."""

    status: BotStatus
    reason: str | None
    since: datetime | None

    @staticmethod
    def of(row: BotRow, trader: Trader | None) -> Status:
        status, reason = row.status, row.reason
        if trader is not None and trader.state.halted:
            status, reason = BotStatus.HALTED, trader.state.halt_reason or reason
        elif trader is not None and trader.state.paused and status is BotStatus.RUNNING:
            status = BotStatus.PAUSED
        return Status(status, reason, row.status_since)


@dataclass(frozen=True)
class BotView:
    """/bots: one bot, its figures from the trader running here or else from the database."""

    id: str
    name: str
    mode: BotMode
    status: Status
    running_here: bool
    traded_by: str | None
    equity: Decimal | None
    open_positions: int
    pending_recovery: int


@dataclass(frozen=True)
class Position:
    """An open (or opening, or closing) trade with its unrealized PnL at the last close the engine saw."""

    trade_id: str
    symbol: str
    side: Side
    qty: Decimal
    entry: Decimal
    stop_loss: Decimal | None
    take_profit: Decimal | None
    status: TradeStatus
    last: Decimal | None
    unrealized: Decimal | None
    strategy: str | None
    funding: Decimal


@dataclass(frozen=True)
class BotPositions:
    """/status of one bot."""

    bot_id: str
    mode: BotMode | None
    status: Status | None  # None: a bot the database does not know (yet)
    positions: list[Position]
    running_here: bool
    starting: bool  # held here, its state not restored yet
    equity: Decimal | None
    paused: bool | None


@dataclass(frozen=True)
class Balance:
    """/balance of one bot: from its running trader, or else its last saved state (`as_of` says when)."""

    bot_id: str
    equity: Decimal | None  # open positions at their last price
    realized: Decimal | None
    peak: Decimal | None
    drawdown_pct: Decimal | None
    day_pnl: Decimal  # trades closed since 00:00 UTC by the wall clock
    as_of: datetime | None


@dataclass(frozen=True)
class SavedState:
    equity: Decimal
    peak: Decimal
    drawdown_pct: Decimal
    taken_at: datetime


@dataclass(frozen=True)
class Halt:
    """A halted bot, as the confirmation of its resume states it."""

    bot_id: str
    reason: str | None
    since: datetime | None
    equity: Decimal | None
    peak: Decimal | None


@dataclass
class ResumeResult:
    resumed: list[str] = field(default_factory=list)
    halted: list[Halt] = field(default_factory=list)  # not resumed: a halt needs a confirmation


@dataclass(frozen=True)
class RetrainQueued:
    """A /retrain as queued: answered at once, the gate's verdicts follow as a notice."""

    strategies: list[str]  # those with new outcomes since their last training: retrained
    behind: list[str]  # training now: the request waits for them


@dataclass(frozen=True)
class ModelVerdict:
    """What the gate decided about one trained challenger (the daily report's ML lines)."""

    bot_id: str
    strategy: str
    version: int
    trained_at: datetime  # data time: the exit of the newest outcome it learnt from
    promoted: bool
    why: str
    asked: bool  # refused though it measured better: a "promote anyway?" waits in /recovery


@dataclass
class RiskChange:
    bot_id: str
    key: str
    old: Any
    new: Decimal
    needs_confirmation: bool
    applied: bool = False


@dataclass(frozen=True)
class TradeQuery:
    """Closed trades, newest exit first, filtered, one page at a time. Pages are keyset pages: `before` is the
    (exit time, id) of the last row of the previous page, so a trade closing meanwhile shifts nothing."""

    bot_id: str | None = None
    symbol: str | None = None
    strategy: str | None = None
    exit_reason: str | None = None
    before: tuple[datetime, str] | None = None
    limit: int = 50


@dataclass(frozen=True)
class TradeRow:
    id: str
    bot_id: str
    symbol: str
    strategy: str | None
    side: str
    qty: Decimal
    entry_price: Decimal
    exit_price: Decimal | None
    entry_time: datetime
    exit_time: datetime
    exit_reason: str | None
    fees: Decimal
    funding: Decimal
    net_pnl: Decimal | None
    realized_r: float | None


@dataclass(frozen=True)
class TradePage:
    rows: list[TradeRow]
    total: int  # closed trades matching the filter (every page)
    more: bool  # an older page exists


@dataclass(frozen=True)
class TradeFacets:
    """The values the trades filter offers."""

    symbols: list[str]
    strategies: list[str]
    exit_reasons: list[str]


class DeskStore(Protocol):
    """The reads and writes the desk needs from storage (storage/desk_store.py implements it)."""

    async def bots(self) -> list[BotRow]: ...

    async def bot_config(self, bot_id: str) -> BotConfig | None: ...

    async def set_status(self, bot_id: str, status: str, reason: str | None, actor: str) -> bool: ...

    async def save_config(self, config: BotConfig, actor: str, change: dict[str, Any]) -> None: ...

    async def facts(self, bot_id: str | None, since: datetime | None) -> list[TradeFacts]: ...


    async def recent_trades(self, bot_id: str | None, n: int) -> list[TradeRow]: ...

    async def phantom_stats(self, bot_id: str | None) -> PhantomStats: ...

    async def phantom_outcomes(self, bot_id: str | None,
                               since: datetime | None) -> list[tuple[datetime, str, bool]]: ...

    async def recovery_pending(self, bot_id: str | None = None) -> list[PendingItem]: ...

    async def recovery_announced(self, item_id: int) -> None: ...

    async def saved_state(self, bot_id: str) -> SavedState | None:
        """The bot's last saved state (its checkpoint): what /balance shows of a bot not running here."""
        ...

    async def decide(self, item_id: int, decision: str, actor: Actor) -> Decided: ...

    async def settle(self, item_id: int, effect: Effect, actor: str,
                     follow_up: list[RecoveryDraft]) -> list[PendingItem]:
        """Record what a decision did (item + audit) and raise the items it leads to; returns those."""
        ...

    async def close_halt_items(self, bot_id: str, actor: Actor) -> None:
        """A halt resumed by command: its pending drawdown_halt item is decided "resume" too."""
        ...

    async def db_stats(self) -> DbStats: ...

    async def job_runs(self) -> list[JobStatus]: ...

    async def ml_stats(self, bot_id: str | None) -> MLStats: ...

    async def audit(self, actor: str, action: str, bot_id: str | None, details: dict[str, Any]) -> None: ...

    async def summary(self, bot_id: str | None, since: datetime | None, capital: Decimal) -> Summary:
        """summarize()'s figures over the closed trades (SqlDeskStore keeps their columns in memory: /stats
        over 100,000 trades in milliseconds)."""
        ...

    async def warm(self) -> None:
        """Load what `summary` reads, ahead of the first /stats."""
        ...

    async def candles_for(self, symbol: str, interval: str, days: int | None,
                          limit: int) -> tuple[CandleSeries, list[TradeRecord]]: ...

    async def trades_page(self, query: TradeQuery) -> TradePage: ...

    async def trade_facets(self, bot_id: str | None) -> TradeFacets: ...

    async def pnl_series(self, bot_id: str | None, since: datetime | None) -> tuple[list[int], list[float]]:
        """(exit time in ms, net PnL) of the closed trades in (exit time, id) order."""
        ...


class RuntimeView(Protocol):
    """What the desk may see and steer of the running bots (bot/runtime.py)."""

    def engine(self, bot_id: str) -> Engine | None: ...

    def trader(self, bot_id: str) -> Trader | None:
        """None until the bot's state is restored (and for a bot another process trades)."""
        ...

    def starting(self, bot_id: str) -> bool:
        """Held by this process, its state not restored yet."""
        ...

    def set_paused(self, bot_id: str, paused: bool) -> bool: ...

    async def retrain(self, bot_id: str, strategy: str | None) -> RetrainQueued: ...

    async def close_positions(self, bot_id: str, symbol: str | None, actor: str,
                              trade_ids: list[str] | None = None) -> list[Closing]: ...

    async def act_on(self, item: Item, option: Option, actor: str) -> Effect:
        """Perform a recorded recovery decision (core/recovery.py) where the bot is traded."""
        ...

    def universe(self, bot_id: str) -> UniverseView | None:
        """A bot's universe rule and its current selection (None: not traded here, or its symbols are a list)."""
        ...


@dataclass
class Desk:
    store: DeskStore
    runtime: RuntimeView | None
    clock: Callable[[], datetime]
    health_fn: Callable[[], Awaitable[HealthDoc]] | None = None
    jobs_fn: Callable[[], Awaitable[list[JobStatus]]] | None = None
    _bot_ids: list[str] = field(default_factory=list)

    # --- helpers --------------------------------------------------------------------------------------
    @staticmethod
    def _admin(actor: Actor) -> None:
        if not actor.admin:
            raise NotAllowed(f"{actor.label} may read but not change the desk")

    async def _bot(self, bot_id: str | None) -> str | None:
        """None = every bot; otherwise an existing id (BadArgument naming the known ones)."""
        if bot_id is None or bot_id == "all":
            return None
        ids = [b.id for b in await self.store.bots()]
        if bot_id not in ids:
            raise BadArgument(f"no bot {bot_id!r} (bots: {', '.join(ids) or 'none'})")
        return bot_id

    async def _targets(self, bot_id: str | None) -> list[str]:
        chosen = await self._bot(bot_id)
        return [chosen] if chosen else [b.id for b in await self.store.bots()]

    async def _acting(self, bot_id: str | None) -> list[str]:
        """The bots an action on `bot_id` reaches: "all" means the desk's bots, not a replay's records (mode
        replay: no process trades them); one named is that one."""
        chosen = await self._bot(bot_id)
        return [chosen] if chosen else [b.id for b in await self.store.bots() if b.mode != "replay"]

    # --- reading ------------------------------------------------------------------------------------------
    async def bots(self) -> list[BotView]:
        out = []
        for b in await self.store.bots():
            trader = self.runtime.trader(b.id) if self.runtime else None
            out.append(BotView(
                b.id, b.name, b.mode, Status.of(b, trader), trader is not None, b.traded_by,
                trader.equity() if trader else b.equity,
                len([t for t in trader.trades.values() if t.status in LIVE_STATES]) if trader else b.open_trades,
                b.pending_recovery))
        return out

    async def status(self, bot_id: str | None = None) -> list[BotPositions]:
        """Open positions with unrealized PnL at the last close the engine saw."""
        out = []
        rows = {b.id: b for b in await self.store.bots()}
        for bid in await self._targets(bot_id):
            trader = self.runtime.trader(bid) if self.runtime else None
            engine = self.runtime.engine(bid) if self.runtime else None
            positions = []
            for t in (trader.trades.values() if trader else []):
                r = t.record
                last = _last_close(engine, r.symbol)
                upnl = None
                if t.status in HELD_STATES and last is not None:
                    upnl = (last - r.entry_price) * r.qty * t.direction
                positions.append(Position(r.id, r.symbol, r.side, r.qty, r.entry_price, r.stop_loss, r.take_profit,
                                          t.status, last, upnl, r.strategy, r.funding))
            row = rows.get(bid)
            starting = self.runtime.starting(bid) if self.runtime else False
            out.append(BotPositions(bid, row.mode if row else None, Status.of(row, trader) if row else None,
                                    positions, trader is not None or starting, starting,
                                    trader.equity() if trader else None, trader.state.paused if trader else None))
        return out

    async def balance(self) -> list[Balance]:
        """Per bot: equity (with open positions at their last price), realized equity, peak, drawdown from the
        running trader or, without one here, its last saved state; today = trades closed since 00:00 UTC by the
        wall clock, like /daily and /stats N."""
        now = self.clock()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        out = []
        for b in await self.store.bots():
            today = sum((f.net_pnl for f in await self.store.facts(b.id, midnight)), Decimal(0))
            trader = self.runtime.trader(b.id) if self.runtime else None
            if trader is None:
                saved = await self.store.saved_state(b.id)
                out.append(Balance(b.id, saved.equity if saved else None, saved.equity if saved else None,
                                   saved.peak if saved else None, saved.drawdown_pct if saved else None, today,
                                   saved.taken_at if saved else None))
                continue
            s = trader.state
            out.append(Balance(b.id, trader.equity(), s.equity, s.peak_equity, s.drawdown_pct, today, None))
        return out

    async def stats(self, days: int | None = None, bot_id: str | None = None) -> StatsDoc:
        if days is not None and not 1 <= days <= 3650:
            raise BadArgument("days must be between 1 and 3650")
        bid = await self._bot(bot_id)
        since = self.clock() - timedelta(days=days) if days else None
        capital = await self._capital(bid)
        doc: StatsDoc = {**await self.store.summary(bid, since, capital),
                         "bot_id": bid or "all", "days": days, "capital": capital}
        if days and not doc["trades"]:  # say when the newest trade closed (a replay's trades are in market time)
            newest = await self.store.recent_trades(bid, 1)
            doc["newest_exit"] = newest[0].exit_time if newest else None
        return doc

    async def _capital(self, bot_id: str | None) -> Decimal:
        configs = [await self.store.bot_config(b) for b in await self._targets(bot_id)]
        return sum((c.capital for c in configs if c is not None), Decimal(0)) or Decimal(1)

    async def daily(self, n: int = 7, bot_id: str | None = None) -> list[tuple[date, float]]:
        if not 1 <= n <= 366:
            raise BadArgument("n must be between 1 and 366")
        since = self.clock() - timedelta(days=n)
        pnl = daily_pnl(await self.store.facts(await self._bot(bot_id), since))
        today = self.clock().date()
        return [(d, pnl.get(d, 0.0)) for d in (today - timedelta(days=k) for k in range(n - 1, -1, -1))]

    async def recent(self, n: int = 10, bot_id: str | None = None) -> list[TradeRow]:
        if not 1 <= n <= 100:
            raise BadArgument("n must be between 1 and 100")
        return await self.store.recent_trades(await self._bot(bot_id), n)

    async def performance(self, bot_id: str | None = None) -> dict[str, dict[str, Summary]]:
        bid = await self._bot(bot_id)
        facts = await self.store.facts(bid, None)
        capital = await self._capital(bid)
        return {"by_symbol": breakdown(facts, capital, "symbol"), "by_strategy": breakdown(facts, capital, "strategy")}

    async def phantom_stats(self, symbol: str | None = None, bot_id: str | None = None) -> PhantomReport:
        stats = await self.store.phantom_stats(await self._bot(bot_id))
        if symbol is not None and symbol.upper() not in stats.symbols():
            raise BadArgument(f"no phantoms for {symbol.upper()} (symbols: {', '.join(stats.symbols()) or 'none'})")
        sym = symbol.upper() if symbol else None
        return PhantomReport(sym, stats.by(symbol=sym),
                             {s: stats.by(strategy=s, symbol=sym) for s in stats.strategies()})

    async def analysis(self, symbol: str, bot_id: str | None = None) -> Analysis:
        symbol = symbol.upper()
        for bid in await self._targets(bot_id):
            engine = self.runtime.engine(bid) if self.runtime else None
            if engine is None or symbol not in engine.symbols:
                continue
            out = Analysis(bid, symbol, {}, {strategy: d for (sym, strategy), d in engine.latest_signals.items()
                                             if sym == symbol})
            btc = engine.market.get(engine.ctx.btc_symbol, engine.config.slow_interval)
            for interval in engine.config.intervals:
                s = engine.market.get(symbol, interval)
                if s is None or s.last_candle is None:
                    continue
                params = next(iter(engine.config.strategies.values()), StrategyParams())  # regime thresholds
                regime = regime_of(s, engine.market.get(engine.ctx.btc_symbol, interval) or btc, params)
                out.intervals[interval] = IntervalView(s.last_candle.close, s.last_candle.close_time, s.ind.n, regime,
                                                       s.ind.snapshot())
            return out
        raise BadArgument(f"{symbol} is not traded by {'bot ' + bot_id if bot_id else 'any running bot'}")

    async def recovery(self) -> list[PendingItem]:
        return await self.store.recovery_pending()

    async def universe(self, bot_id: str | None = None) -> list[UniverseView]:
        """/universe: for each bot traded here whose symbols are a rule, the current set and why each is in."""
        views = []
        for bid in await self._targets(bot_id):
            view = self.runtime.universe(bid) if self.runtime is not None else None
            if view is not None:
                views.append(view)
        return views

    async def recovery_announced(self, item_id: int) -> None:
        """The item was delivered to the admins with its buttons: it is not sent again after a restart."""
        await self.store.recovery_announced(item_id)

    async def pending_promotions(self, bot_id: str | None = None) -> list[PendingItem]:
        """Challengers the gate refused, waiting for "promote anyway" or a dismissal."""
        items = await self.store.recovery_pending(await self._bot(bot_id))
        return [i for i in items if i["kind"] is RecoveryKind.ML_PROMOTE]

    async def candles_for(self, symbol: str, days: int | None = None, bot_id: str | None = None,
                          limit: int = 200) -> SymbolChart:
        """/chart SYMBOL: the newest candles of a traded symbol (slow interval; the last `days` before the
        newest stored candle, at most `limit`) and the bot's trades among them."""
        symbol = symbol.upper()
        configs = [c for c in [await self.store.bot_config(b) for b in await self._targets(bot_id)] if c]
        config = next((c for c in configs if symbol in c.symbols), None)
        if config is None:
            raise BadArgument(f"{symbol} is not traded by any bot")
        if days is not None and not 1 <= days <= 3650:
            raise BadArgument("days must be between 1 and 3650")
        series, trades = await self.store.candles_for(symbol, config.slow_interval, days, limit)
        return SymbolChart(symbol, config.slow_interval, series, [t for t in trades if t.bot_id == config.id])

    async def trades(self, query: TradeQuery) -> TradePage:
        """The trades table: closed trades filtered by bot, symbol, strategy and exit reason, paged."""
        if not 1 <= query.limit <= 200:
            raise BadArgument("limit must be between 1 and 200")
        return await self.store.trades_page(replace(query, bot_id=await self._bot(query.bot_id),
                                                    symbol=query.symbol.upper() if query.symbol else None))

    async def trade_facets(self, bot_id: str | None = None) -> TradeFacets:
        return await self.store.trade_facets(await self._bot(bot_id))

    async def equity(self, days: int | None = None, bot_id: str | None = None, points: int = 1000) -> EquityCurve:
        """The equity curve (capital + closed trades' net PnL) and its drawdown, thinned for a chart."""
        if days is not None and not 1 <= days <= 3650:
            raise BadArgument("days must be between 1 and 3650")
        bid = await self._bot(bot_id)
        since = self.clock() - timedelta(days=days) if days else None
        exit_ms, pnl = await self.store.pnl_series(bid, since)
        return equity_drawdown(exit_ms, pnl, await self._capital(bid), points)

    async def db_stats(self) -> DbStats:
        return await self.store.db_stats()

    async def health(self) -> HealthDoc | None:
        """None without a host (the console reading a database): nothing runs here to be healthy."""
        return await self.health_fn() if self.health_fn else None

    async def jobs(self) -> list[JobStatus]:
        return await self.jobs_fn() if self.jobs_fn else await self.store.job_runs()

    async def ml_stats(self, bot_id: str | None = None) -> MLStats:
        return await self.store.ml_stats(await self._bot(bot_id))

    async def ml_verdicts(self, days: int = 1) -> list[ModelVerdict]:
        """The gate's verdicts on the newest challenger of each strategy trained in the last `days`."""
        since = self.clock() - timedelta(days=days)
        out = []
        for m in (await self.store.ml_stats(None))["latest"]:
            metrics = m.get("metrics") or {}
            if m["trained_at"] is None or m["trained_at"] < since:
                continue
            promoted = bool(metrics.get("promoted"))
            out.append(ModelVerdict(m["bot_id"], m["strategy"], int(m["version"]), m["trained_at"], promoted,
                                    str(metrics.get("why") or ""), not promoted and worth_asking(metrics)))
        return out

    async def risk(self, bot_id: str | None = None) -> list[RiskRow]:
        out = []
        for bid in await self._targets(bot_id):
            config = await self.store.bot_config(bid)
            if config is not None:
                out.append(RiskRow(bid, {k: getattr(config, k) for k in RISK_KEYS}, config.risk_usd,
                                   config.max_position_notional))
        return out

    async def pnl_chart(self, days: int | None = None, bot_id: str | None = None) -> PnlChart:
        """/chart equity and /chart daily: the closed trades' equity curve and daily PnL over the window."""
        bid = await self._bot(bot_id)
        facts = await self.store.facts(bid, self.clock() - timedelta(days=days) if days else None)
        capital = await self._capital(bid)
        return PnlChart(equity_curve(facts, capital), capital, daily_pnl(facts))

    async def phantom_outcomes(self, days: int | None = None,
                               bot_id: str | None = None) -> list[tuple[datetime, str, bool]]:
        """/chart winrate: every closed phantom's (exit time, strategy, won?) over the window."""
        return await self.store.phantom_outcomes(await self._bot(bot_id), self.clock() - timedelta(days=days)
                                                 if days else None)

    async def phantom_groups(self, bot_id: str | None = None) -> dict[str, ActionFigures]:
        """/chart phantoms: per strategy, the phantoms' figures by action."""
        stats = await self.store.phantom_stats(await self._bot(bot_id))
        return {s: stats.by(strategy=s) for s in stats.strategies()}

    # --- acting -----------------------------------------------------------------------------------------------
    async def pause(self, target: str | None, reason: str | None, actor: Actor) -> list[str]:
        self._admin(actor)
        done = []
        for bid in await self._acting(target):
            if await self.store.set_status(bid, "paused", reason or f"paused by {actor.label}", actor.label):
                if self.runtime:
                    self.runtime.set_paused(bid, True)
                done.append(bid)
        return done

    async def pause_targets(self, target: str | None) -> list[str]:
        """The bots a pause of `target` would stop (those not paused already): a confirmation lists them."""
        rows = {b.id: b for b in await self.store.bots()}
        return [bid for bid in await self._acting(target) if rows[bid].status is not BotStatus.PAUSED]

    async def resume(self, target: str | None, actor: Actor, confirmed: list[str] | None = None) -> ResumeResult:
        """Paused bots trade again at once. A halted bot only when its id is in `confirmed` (the transport's
        confirmation listed it, with what resets: the peak equity becomes the current equity)."""
        self._admin(actor)
        out = ResumeResult()
        rows = {b.id: b for b in await self.store.bots()}
        for bid in await self._acting(target):
            status = Status.of(rows[bid], self.runtime.trader(bid) if self.runtime else None)
            halted = status.status is BotStatus.HALTED
            if halted and bid not in (confirmed or []):
                trader = self.runtime.trader(bid) if self.runtime else None
                out.halted.append(Halt(bid, status.reason, status.since, trader.state.equity if trader else None,
                                       trader.state.peak_equity if trader else None))
                continue
            if await self.store.set_status(bid, "running", None, actor.label):
                if self.runtime:
                    self.runtime.set_paused(bid, False)
                if halted:
                    await self.store.close_halt_items(bid, actor)
                out.resumed.append(bid)
        return out

    async def close(self, target: str, actor: Actor, bot_id: str | None = None,
                    trade_ids: list[str] | None = None) -> list[Closing]:
        """Close one symbol's position (or every position with "all") at market — after the transport's
        confirmation button, which lists `trade_ids`: exactly those are closed, nothing opened since."""
        self._admin(actor)
        if self.runtime is None:
            raise BadArgument("no bot is running in this process")
        symbol = None if target.lower() == "all" else target.upper()
        closed: list[Closing] = []
        for bid in await self._targets(bot_id):
            closed += await self.runtime.close_positions(bid, symbol, actor.label, trade_ids)
        await self.store.audit(actor.label, "close", bot_id, {
            "target": target, "listed": trade_ids,
            "closed": [{"trade_id": c.trade_id, "symbol": c.symbol, "qty": str(c.qty), "step": str(c.step)}
                       for c in closed]})
        return closed

    async def retrain(self, strategy: str | None, actor: Actor,
                      bot_id: str | None = None) -> dict[str, RetrainQueued]:
        self._admin(actor)
        if self.runtime is None:
            raise BadArgument("no bot is running in this process")
        here = [bid for bid in await self._targets(bot_id) if self.runtime.engine(bid) is not None]
        if not here:
            raise BadArgument(f"bot {bot_id} is not running in this process" if bot_id else
                              "no bot is running in this process")
        out = {bid: await self.runtime.retrain(bid, strategy) for bid in here}
        await self.store.audit(actor.label, "retrain", bot_id, {
            "strategy": strategy, "queued": {bid: q.strategies for bid, q in out.items()}})
        return out

    async def risk_set(self, key: str, value: str, actor: Actor, bot_id: str | None = None,
                       confirmed: bool = False) -> list[RiskChange]:
        """Validate and (when safe or confirmed) apply a risk setting to one bot or all."""
        self._admin(actor)
        spec, number = _risk_number(key, value)
        changes = []
        for bid in await self._acting(bot_id):
            config = await self.store.bot_config(bid)
            if config is None:
                continue
            danger = spec.danger is not None and number >= spec.danger
            change = RiskChange(bid, key, getattr(config, key), number, danger)
            if not danger or confirmed:
                new = config.model_copy(update={key: int(number) if spec.integer else
                                                (float(number) if key == "ml_threshold" else number)})
                BotConfig.model_validate(new.model_dump())  # the same rules as a config file
                await self.store.save_config(new, actor.label, {"key": key, "old": str(change.old),
                                                                "new": str(number)})
                change.applied = True
            changes.append(change)
        return changes

    async def risk_preview(self, key: str, value: str, bot_id: str | None = None) -> list[RiskChange]:
        """What risk_set would change, validated the same way, nothing applied (a confirmation shows it)."""
        spec, number = _risk_number(key, value)
        out = []
        for bid in await self._acting(bot_id):  # the bots risk_set would reach
            config = await self.store.bot_config(bid)
            if config is not None:
                out.append(RiskChange(bid, key, getattr(config, key), number,
                                      spec.danger is not None and number >= spec.danger))
        return out

    async def decide(self, item_id: int, option: str, actor: Actor) -> RecoveryResult:
        """A recovery item decided by an admin: recorded once (a second press finds it decided), then
        performed against the exchange's state now (core/recovery.py), recorded and audited."""
        self._admin(actor)
        decided = await self.store.decide(item_id, option, actor)
        if not decided.ok or decided.kind is None:
            return RecoveryResult(decided, option)
        item = Item(decided.item_id, decided.bot_id, RecoveryKind(decided.kind), decided.details or {})
        if self.runtime is not None:
            effect = await self.runtime.act_on(item, Option(option), actor.label)
        else:
            effect = Effect(Outcome.QUEUED, "no bot runs in this process: the desk trading the bot performs the "
                                            "decision within a minute")
        follow = await self.store.settle(item_id, effect, actor.label, effect.follow_up)
        return RecoveryResult(decided, option, effect, follow)

    async def promote(self, bot_id: str, strategy: str, version: int, actor: Actor) -> RecoveryResult:
        """"Promote anyway": decides the pending ml_promote item of exactly this challenger (none pending:
        already decided, superseded or expired — nothing changes)."""
        self._admin(actor)
        for item in await self.store.recovery_pending(bot_id):
            details = item.get("details") or {}
            if item["kind"] == RecoveryKind.ML_PROMOTE and details.get("strategy") == strategy \
                    and int(details.get("version", -1)) == version:
                return await self.decide(int(item["id"]), Option.PROMOTE, actor)
        return RecoveryResult(Decided(False, 0, "decided", None, bot_id, RecoveryKind.ML_PROMOTE), Option.PROMOTE)

    async def close_preview(self, target: str, bot_id: str | None = None) -> list[Position]:
        """What /close would close now (shown with the confirmation buttons)."""
        if self.runtime is None:
            raise BadArgument("no bot is running in this process")
        symbol = None if target.lower() == "all" else target.upper()
        found = [p for s in await self.status(bot_id) for p in s.positions
                 if p.status in LIVE_STATES and (symbol is None or p.symbol == symbol)]
        if not found:  # a bot another replica trades holds its positions there: not "nothing to close"
            runtime, targets = self.runtime, set(await self._targets(bot_id))
            elsewhere = [f"{b.id} (traded by {b.traded_by})" for b in await self.store.bots()
                         if b.id in targets and b.traded_by and runtime.trader(b.id) is None]
            if elsewhere:
                raise BadArgument(f"{', '.join(elsewhere)}: traded by another process, whose positions this one "
                                  "cannot see or close; send /close again (a replica that trades it will list them)")
        return found

    async def record_press(self, actor: Actor, button: str, outcome: str) -> None:
        """Every button press, whatever it did, in audit_log with the user id."""
        await self.store.audit(actor.label, "button", None, {"data": button, "outcome": outcome[:200]})


def _risk_number(key: str, value: str) -> tuple[RiskKey, Decimal]:
    spec = RISK_KEYS.get(key)
    if spec is None:
        raise BadArgument(f"unknown key {key!r} (keys: {', '.join(RISK_KEYS)})")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise BadArgument(f"{key} must be a number, not {value!r}") from None
    if not number.is_finite() or not spec.contains(number):
        raise BadArgument(f"{key} must be {spec.describe()}")
    if spec.integer and number != number.to_integral_value():
        raise BadArgument(f"{key} must be a whole number")
    return spec, number


def _last_close(engine: Engine | None, symbol: str) -> Decimal | None:
    if engine is None:
        return None
    s = engine.market.get(symbol, engine.config.fast_interval) or engine.market.get(symbol, engine.config.slow_interval)
    if s is None or s.last_candle is None:
        return None
    return Decimal(repr(s.last_candle.close))
