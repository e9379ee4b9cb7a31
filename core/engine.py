"""The engine of one bot: the only place that knows the order of a candle's journey (ARCHITECTURE.md §2).

candle → MarketState → phantom updates → strategies → regime gate → signal (tick-rounded, with
features) → scorer → guards → phantom record. Deterministic: the same candles, config and starting
state give the same signals and phantoms; time comes from the candles only.

A strategy is user code: one that raises (or proposes nonsense) is disabled for this bot with one notice,
and the bot goes on with the others.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from core.config import BotConfig
from core.funding import FundingSchedule
from core.instruments import Instrument, Instruments
from core.ledger import LedgerEvent
from core.market.candle import INTERVAL_MS, Candle, ms_to_dt
from core.market.replay import sort_key
from core.market.state import MarketState
from core.ml.scorer import UNSCORED, NoScorer, Score, Scorer
from core.phantom import WIN_RATE_WINDOW, Phantom, PhantomBook, SubCandles
from core.signal import Action, Signal, signal_id
from core.strategies import Context, Proposal, Strategy, build_strategies
from core.strategies.features import compute_features
from core.strategies.regime import regime_of
from core.trader import Notice, Trader

log = logging.getLogger(__name__)

EXECUTED_MEMORY = 512  # executed decisions kept for amendment (an entry is refused within seconds)

# A guard looks at a signal the filter would take and returns why it must not be (None: go ahead).
Guard = Callable[[Signal, Score], str | None]


@dataclass
class Decision:
    signal: Signal
    action: Action
    reason: str | None
    score: Score
    phantom: Phantom


@dataclass
class CandleResult:
    decisions: list[Decision] = field(default_factory=list)
    closed: list[Phantom] = field(default_factory=list)
    touched: list[Phantom] = field(default_factory=list)
    ledger: list[LedgerEvent] = field(default_factory=list)  # trade opens/closes to write, in order
    notices: list[Notice] = field(default_factory=list)  # for the operator
    amended: list[Decision] = field(default_factory=list)  # earlier decisions whose action changed since


@dataclass
class Checkpoint:
    """Engine state that candles cannot rebuild, saved with every batch so a restart resumes exactly."""

    after: tuple[int, int, str] | None = None  # sort key of the last candle processed
    counters: dict[str, int] = field(default_factory=dict)
    last_signal_ms: dict[str, int] = field(default_factory=dict)  # "strategy|symbol" -> close ms
    win_windows: dict[str, list[int]] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)  # "YYYY-MM-DD|strategy" -> blocked signals
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"after": list(self.after) if self.after else None, "counters": self.counters,
                "last_signal_ms": self.last_signal_ms, "win_windows": self.win_windows, "blocked": self.blocked,
                "extra": self.extra}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Checkpoint:
        after = doc.get("after")
        return cls(tuple(after) if after else None, dict(doc.get("counters", {})),
                   dict(doc.get("last_signal_ms", {})), {k: list(v) for k, v in doc.get("win_windows", {}).items()},
                   dict(doc.get("blocked", {})), dict(doc.get("extra", {})))


class Engine:
    def __init__(self, config: BotConfig, *, scorer: Scorer | None = None, guards: list[Guard] | None = None,
                 instruments: Instruments | None = None, capacity: int = 1000, trader: Trader | None = None,
                 funding: FundingSchedule | None = None, market: MarketState | None = None) -> None:
        """`market`: a MarketState already warmed on the history (optimize warms a window once, not per trial)."""
        self.config = config
        self.market = market if market is not None else MarketState(capacity)
        self.ctx = Context(self.market, config.slow_interval, config.fast_interval)
        lineup = build_strategies(config)
        self.strategies: list[Strategy] = lineup.strategies
        self.versions = lineup.versions  # strategy -> version, part of its signal ids
        self.by_interval: dict[str, list[Strategy]] = {}
        self.disabled: dict[str, str] = {}  # strategy -> why this bot runs without it
        self._notices: list[Notice] = []  # the engine's own, for the operator: see take_notices()
        for name, why in lineup.unavailable.items():
            self._without(name, why)
        self._sort_strategies()
        self.symbols = frozenset(config.symbols)
        self.book = PhantomBook(config.phantom_timeout_candles, resolver=self._sub_candles, funding=funding)
        self.scorer: Scorer = scorer or NoScorer()
        self.guards: list[Guard] = list(guards or [])
        self.instruments = instruments or Instruments()
        self.counters: Counter[str] = Counter()
        self.last_signal_ms: dict[str, int] = {}
        self.blocked: Counter[str] = Counter()
        self.after: tuple[int, int, str] | None = None
        self.latest_signals: dict[tuple[str, str], Decision] = {}  # (symbol, strategy) -> latest, for /analysis
        self.executed: OrderedDict[str, Decision] = OrderedDict()  # recent EXECUTED decisions, by signal id
        self._amended: list[Decision] = []
        self.extra: dict[str, Any] = {}  # saved with the checkpoint (run id, equity, ...)
        self.trader = trader
        if trader is not None:
            trader._win_rate = self.book.win_rate
            self.guards.append(trader.guard)

    # --- strategies -----------------------------------------------------------------------------
    def _sort_strategies(self) -> None:
        self.by_interval = {
            self.config.slow_interval: [s for s in self.strategies if s.role == "slow"],
            self.config.fast_interval: [s for s in self.strategies if s.role == "fast"],
        }

    def _without(self, name: str, why: str) -> None:
        self.disabled[name] = why
        self._notices.append(Notice("strategy_failed", self.config.id, f"strategy {name} is off for this bot: {why}",
                                    {"strategy": name, "reason": why}))

    def _failed(self, strategy: Strategy, call: str, candle: Candle, exc: Exception) -> None:
        """`strategy` raised: off for this bot until it restarts (a fixed file is loaded then)."""
        log.error("bot %s: strategy %s disabled: %s raised on %s %s", self.config.id, strategy.name, call,
                  candle.symbol, candle.interval, exc_info=exc)
        self.strategies = [s for s in self.strategies if s is not strategy]
        self._sort_strategies()
        at = f"{candle.symbol} {candle.interval}, candle closed {candle.close_time:%Y-%m-%d %H:%M} UTC"
        self._without(strategy.name, f"{call}() raised {type(exc).__name__}: {str(exc)[:200]} ({at})")

    def take_notices(self) -> list[Notice]:
        """The engine's notices not yet handed out (a strategy this bot runs without); on_candle hands
        them out with its result, the host may take them at once after building the engine."""
        notices, self._notices = self._notices, []
        return notices

    # --- state ----------------------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        if self.trader is not None:
            state = self.trader.state
            self.extra.update(trader=self.trader.as_json(), equity=str(self.trader.equity()),
                              peak_equity=str(state.peak_equity), drawdown_pct=float(state.drawdown_pct),
                              halted=state.halted, halt_reason=state.halt_reason)
        return Checkpoint(self.after, dict(self.counters), dict(self.last_signal_ms),
                          {k: list(v) for k, v in self.book.win_windows.items()}, dict(self.blocked), dict(self.extra))

    def restore(self, cp: Checkpoint, active: list[Phantom]) -> None:
        self.after = cp.after
        self.counters = Counter(cp.counters)
        self.last_signal_ms = dict(cp.last_signal_ms)
        self.blocked = Counter(cp.blocked)
        self.extra = dict(cp.extra)
        if self.trader is not None and "trader" in self.extra:
            self.trader.restore(self.extra["trader"])
        self.book.win_windows = {k: deque(v, maxlen=WIN_RATE_WINDOW) for k, v in cp.win_windows.items()}
        self.book.restore(active)

    def warm(self, candle: Candle) -> None:
        """History before the run (or before a resume point): indicators only, no signals."""
        self.market.update(candle)

    # --- the candle path ------------------------------------------------------------------------
    def on_candle(self, candle: Candle) -> CandleResult:
        result = CandleResult()
        update = self.market.update(candle)
        self.after = sort_key(candle)
        if update.series is None:
            self.counters["duplicates"] += 1
            return result
        self.counters["candles"] += 1
        book = self.book
        if update.gap is not None:
            self.counters["gaps"] += 1
            result.closed.extend(book.on_gap(candle.symbol, candle.interval, candle))
        closed, touched = book.on_candle(candle)
        result.closed.extend(closed)
        result.touched = touched
        for p in result.closed:
            self.counters["phantoms_closed"] += 1
            self.scorer.observe(p)
        if self.trader is not None:  # fills and exits first: a position closed now frees its slot
            self.trader.on_candle(candle)
            for ended in self.trader.drain_ended():  # entries the venue refused: their signals say why
                if ended.signal_id is not None:
                    self.amend_signal(ended.signal_id, ended.reason)
        strategies = self.by_interval.get(candle.interval)
        if strategies and candle.symbol in self.symbols:
            for strategy in strategies:
                decision = self._evaluate(strategy, update.series, candle)
                if decision is not None:
                    result.decisions.append(decision)
            if self.trader is not None and result.decisions:
                self.trader.on_decisions(result.decisions)
        if self.trader is not None:
            result.ledger, self.trader.events = self.trader.events, []
            result.notices, self.trader.notices = self.trader.notices, []
        if self._notices:
            result.notices.extend(self.take_notices())
        if self._amended:
            result.amended, self._amended = self._amended, []
        return result

    def amend_signal(self, signal_id: str, reason: str) -> Decision | None:
        """An executed signal whose entry the exchange refused (or that ended unfilled) becomes REJECTED
        with the exchange's words; the next batch stores the change (the host may write it at once too)."""
        decision = self.executed.pop(signal_id, None)
        if decision is None or decision.action != "EXECUTED":
            return None
        decision.action, decision.reason = "REJECTED", reason
        decision.phantom.action, decision.phantom.reason = "REJECTED", reason
        self.counters["signals_executed"] -= 1
        self.counters["signals_rejected"] += 1
        self._amended.append(decision)
        return decision

    def _evaluate(self, strategy: Strategy, s: Any, candle: Candle) -> Decision | None:
        key = f"{strategy.name}|{candle.symbol}"
        step = INTERVAL_MS[candle.interval]
        close_ms = candle.open_ms + step
        last = self.last_signal_ms.get(key)
        if last is not None and close_ms - last <= strategy.params.cooldown_candles * step:
            return None
        try:
            proposal = _checked(strategy.propose(s, self.ctx))
        except Exception as exc:
            self._failed(strategy, "propose", candle, exc)
            return None
        if proposal is None:
            return None
        btc = self.market.get(self.ctx.btc_symbol, candle.interval)
        regime = regime_of(s, btc, strategy.params)
        try:
            allowed = strategy.allowed(regime, proposal.side)
        except Exception as exc:
            self._failed(strategy, "allowed", candle, exc)
            return None
        if not allowed:
            return None
        long = proposal.side == "long"
        inst = self.instruments.get(candle.symbol, candle.close)
        entry = inst.price(proposal.entry)
        stop = inst.price(proposal.stop, ROUND_FLOOR if long else ROUND_CEILING)  # never nearer than proposed
        target = inst.price(proposal.target)
        direction = 1 if long else -1
        if (entry - stop) * direction <= 0 or (target - entry) * direction <= 0:
            return None  # the levels collapsed onto the tick grid
        win_rate, outcomes = self.book.win_rate(strategy.name)
        features = compute_features(s, btc, regime, side=proposal.side, entry=float(entry), stop=float(stop),
                                    target=float(target), close_ms=close_ms, win_rate=win_rate, outcomes=outcomes)
        at = ms_to_dt(close_ms)
        version = self.versions[strategy.name]
        signal = Signal(signal_id(self.config.id, candle.symbol, candle.interval, strategy.name, version, at),
                        self.config.id, candle.symbol, candle.interval, strategy.name, proposal.side, entry, stop,
                        target, at, features, version)
        self.last_signal_ms[key] = close_ms
        unfit = self._unfit(inst, entry, stop, target)
        score = self.scorer.score(signal) if unfit is None else UNSCORED
        action: Action
        if unfit is not None:  # not a trade a trader would take: followed as a phantom, never sent
            action, reason = "REJECTED", unfit
        elif not score.take:
            action, reason = "REJECTED", score.reason
        else:
            blocked = next((why for guard in self.guards if (why := guard(signal, score)) is not None), None)
            action, reason = ("BLOCKED", blocked) if blocked else ("EXECUTED", score.reason)
        if action == "BLOCKED":
            self.blocked[f"{at:%Y-%m-%d}|{strategy.name}"] += 1
        self.counters["signals"] += 1
        self.counters[f"signals_{action.lower()}"] += 1
        if score.p_win is not None:
            self.counters["scored_signals"] += 1
        phantom = self.book.record(signal, action, reason, score.p_win, score.ev_r)
        decision = Decision(signal, action, reason, score, phantom)
        self.latest_signals[(candle.symbol, strategy.name)] = decision
        if action == "EXECUTED":
            self.executed[signal.id] = decision
            while len(self.executed) > EXECUTED_MEMORY:
                self.executed.popitem(last=False)
        return decision

    def _unfit(self, inst: Instrument, entry: Decimal, stop: Decimal, target: Decimal) -> str | None:
        """Why these levels are not a trade: too few ticks from the entry, or too little reward once a round
        trip of taker fees and slippage is paid (in R of the stop distance grown by the same costs)."""
        c = self.config
        nearest = min(abs(entry - stop), abs(target - entry))
        if nearest < c.min_level_ticks * inst.tick:
            return (f"stop or target {nearest / inst.tick:.0f} tick(s) from the entry (min {c.min_level_ticks} "
                    f"of {inst.tick})")
        cost = entry * (Decimal(repr(c.taker_fee_pct)) / 50 + Decimal(repr(c.slippage_bps)) / 5000)  # 2 × each
        reward_r = (abs(target - entry) - cost) / (abs(entry - stop) + cost)
        if reward_r < Decimal(repr(c.min_reward_r)):
            return f"reward {reward_r:.2f}R after fees and slippage (min {c.min_reward_r}R)"
        return None

    def _sub_candles(self, symbol: str, interval: str, open_ms: int) -> SubCandles | None:
        """The fast-interval candles covering one slow candle, when all of them are held."""
        if interval != self.config.slow_interval:
            return None
        fast = self.market.get(symbol, self.config.fast_interval)
        if fast is None:
            return None
        step = INTERVAL_MS[self.config.fast_interval]
        k = INTERVAL_MS[interval] // step
        times = fast.last("open_ms", k)
        if len(times) != k or int(times[0]) != open_ms or int(times[-1]) != open_ms + (k - 1) * step:
            return None
        o, h, lo, c = (fast.last(f, k) for f in ("open", "high", "low", "close"))
        return [(float(o[i]), float(h[i]), float(lo[i]), float(c[i]), int(times[i]) + step) for i in range(k)]


def _checked(proposal: object) -> Proposal | None:
    """A strategy's answer, refused unless it is None or a Proposal with a side and finite levels (a user's
    NaN must not reach the tick rounding, the ledger or the exchange)."""
    if proposal is None:
        return None
    if not isinstance(proposal, Proposal):
        raise TypeError(f"returned {type(proposal).__name__}, not a Proposal or None")
    if proposal.side not in ("long", "short"):
        raise ValueError(f"proposed side {proposal.side!r}, not long or short")
    if not all(math.isfinite(x) for x in (proposal.entry, proposal.stop, proposal.target)):
        raise ValueError(f"proposed levels that are not finite numbers: {proposal}")
    return proposal
