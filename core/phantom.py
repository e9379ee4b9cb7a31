"""PhantomBook: every signal — taken, rejected by the ML filter, or blocked by a risk guard — followed
to the outcome it would have had.

Lifecycle rules (tested case by case in tests/unit/test_phantom.py):
- A phantom is followed on the candles of its signal's symbol and interval, from the candle after
  the signal.
- Exit at the stop-loss (outcome "loss", R = -1) or the take-profit ("win", R = reward/risk). A candle
  that opens beyond a level exits at its open (a gap through the stop costs more than 1R).
- One candle touching both levels: the lower-interval candles of that period (when the desk has
  them, complete) decide which came first; otherwise, or if one of them touches both, the stop-loss
  (conservative).
- Timeout after `timeout_candles` candles: exit at that candle's close, outcome "timeout", R signed.
- Data gap (candles missing in the phantom's series): the phantom is closed at the open of the first
  candle after the gap with exit reason "gap" and outcome "timeout"; what happened inside the gap is
  unknown, so the ML dataset leaves gap exits out.
- MFE/MAE are in R and end at the exit (a stop-out candle's favourable move is not counted: it may
  have come after the stop); TP1 is the close time of the first candle whose
  favourable excursion reached 1R (not counted in a candle that exits at the stop).
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypedDict

from core.funding import FundingSchedule
from core.funding import funding_r as settlement_r
from core.ledger import canonical_decimal
from core.market.candle import INTERVAL_MS, Candle, ms_to_dt
from core.signal import Action, Signal

WIN_RATE_WINDOW = 200

# (open, high, low, close, close_ms) of the lower-interval candles covering [open_ms, open_ms + step)
SubCandles = Sequence[tuple[float, float, float, float, int]]
Resolver = Callable[[str, str, int], SubCandles | None]


@dataclass(slots=True, eq=False)
class Phantom:
    id: str
    bot_id: str
    symbol: str
    interval: str
    strategy: str
    side: str
    entry: Decimal
    stop_loss: Decimal
    take_profit: Decimal
    opened_at: datetime
    action: str
    reason: str | None
    ml_score: float | None
    ml_ev: float | None
    features: dict[str, float]
    # hot-path copies
    dir: int = 0
    e: float = 0.0
    sl: float = 0.0
    tp: float = 0.0
    risk: float = 0.0
    rr: float = 0.0
    # lifecycle
    status: str = "active"
    outcome: str | None = None
    exit_reason: str | None = None
    exit_price: float | None = None
    exit_time: datetime | None = None
    realized_r: float | None = None
    pnl_pct: float | None = None
    mfe_r: float = 0.0
    mae_r: float = 0.0
    tp1_time: datetime | None = None
    candles_seen: int = 0
    last_ms: int = 0  # open time of the last candle applied (restart/resume safety)
    funding_r: float = 0.0  # funding settled while it was open, in R (inside realized_r once closed)

    def __post_init__(self) -> None:
        self.dir = 1 if self.side == "long" else -1
        self.e, self.sl, self.tp = float(self.entry), float(self.stop_loss), float(self.take_profit)
        self.risk = abs(self.e - self.sl)
        self.rr = abs(self.tp - self.e) / self.risk

    @property
    def was_executed(self) -> bool:
        return self.action == "EXECUTED"

    @classmethod
    def from_signal(cls, signal: Signal, action: Action, reason: str | None, ml_score: float | None,
                    ml_ev: float | None) -> Phantom:
        return cls(signal.id, signal.bot_id, signal.symbol, signal.interval, signal.strategy, signal.side,
                   signal.entry, signal.stop_loss, signal.take_profit, signal.time, action, reason, ml_score, ml_ev,
                   signal.features, last_ms=int(signal.time.timestamp() * 1000) - INTERVAL_MS[signal.interval])

    def canonical(self) -> dict[str, Any]:
        """The fields that define an outcome, for digests (stable, JSON-able)."""
        return {
            "id": self.id, "symbol": self.symbol, "interval": self.interval, "strategy": self.strategy,
            "side": self.side, "entry": canonical_decimal(self.entry), "sl": canonical_decimal(self.stop_loss),
            "tp": canonical_decimal(self.take_profit), "action": self.action, "outcome": self.outcome,
            "exit_reason": self.exit_reason,
            "exit_price": None if self.exit_price is None else canonical_decimal(Decimal(repr(self.exit_price))),
            "exit_time": self.exit_time.isoformat() if self.exit_time else None,
            "r": _num(self.realized_r), "mfe": _num(self.mfe_r), "mae": _num(self.mae_r),
        }


def _num(x: float | None) -> str | None:
    return None if x is None else f"{x:.10g}"


def phantom_digest(phantoms: Iterable[Phantom]) -> str:
    """sha256 over the canonical list of closed phantoms, ordered by id (independent of arrival order)."""
    rows = sorted((p.canonical() for p in phantoms if p.status == "closed"), key=lambda r: r["id"])
    return hashlib.sha256(json.dumps(rows, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class PhantomBook:
    def __init__(self, timeout_candles: int = 96, resolver: Resolver | None = None,
                 funding: FundingSchedule | None = None) -> None:
        self.timeout = timeout_candles
        self.resolver = resolver
        # a phantom earns or pays funding as the trade would have (core/funding.py): ML labels mean R earned
        self.funding = funding or FundingSchedule()
        self.active: dict[tuple[str, str], list[Phantom]] = {}
        self.win_windows: dict[str, deque[int]] = {}  # strategy -> 1/0 of the last outcomes

    # --- recording -------------------------------------------------------------------------------
    def record(self, signal: Signal, action: Action, reason: str | None = None, ml_score: float | None = None,
               ml_ev: float | None = None) -> Phantom:
        phantom = Phantom.from_signal(signal, action, reason, ml_score, ml_ev)
        self.active.setdefault((signal.symbol, signal.interval), []).append(phantom)
        return phantom

    def restore(self, phantoms: Iterable[Phantom]) -> None:
        """Active phantoms loaded after a restart."""
        for p in phantoms:
            self.active.setdefault((p.symbol, p.interval), []).append(p)

    def count_active(self) -> int:
        return sum(len(v) for v in self.active.values())

    # --- outcomes --------------------------------------------------------------------------------
    def win_rate(self, strategy: str) -> tuple[float, int]:
        """(win rate, outcomes) over the rolling window of a strategy; (nan, 0) before any outcome."""
        window = self.win_windows.get(strategy)
        if not window:
            return float("nan"), 0
        return sum(window) / len(window), len(window)

    def observe(self, phantom: Phantom) -> None:
        """Feed a closed phantom into the rolling windows (also used to rebuild them after a restart)."""
        if phantom.exit_reason == "gap":
            return
        window = self.win_windows.get(phantom.strategy)
        if window is None:
            window = self.win_windows[phantom.strategy] = deque(maxlen=WIN_RATE_WINDOW)
        window.append(1 if (phantom.realized_r or 0) > 0 else 0)

    def on_gap(self, symbol: str, interval: str, candle: Candle) -> list[Phantom]:
        """Candles are missing before `candle`: close the series' phantoms at its open (rule above)."""
        phantoms = self.active.pop((symbol, interval), [])
        for p in phantoms:
            self._close(p, candle.open, candle.open_time, "gap")
        return phantoms

    def on_candle(self, candle: Candle) -> tuple[list[Phantom], list[Phantom]]:
        """Apply a closed candle; returns (closed, still active and touched) phantoms of its series."""
        phantoms = self.active.get((candle.symbol, candle.interval))
        if not phantoms:
            return [], []
        o, h, lo, c = candle.open, candle.high, candle.low, candle.close
        open_ms = candle.open_ms
        # settlements since the previous candle's open, due at this one's (before its exits: core/funding.py)
        settlements = self.funding.between(candle.symbol, open_ms - INTERVAL_MS[candle.interval], open_ms)
        close_time = candle.close_time
        timeout = self.timeout
        closed: list[Phantom] = []
        kept: list[Phantom] = []
        for p in phantoms:
            if open_ms <= p.last_ms:  # already applied (a candle replayed after a restart)
                kept.append(p)
                continue
            if settlements:
                self._settle(p, settlements, o)
            p.last_ms = open_ms
            p.candles_seen += 1
            if p.dir == 1:
                fav, adv = (h - p.e) / p.risk, (p.e - lo) / p.risk
                hit_sl, hit_tp = lo <= p.sl, h >= p.tp
                open_sl, open_tp = o <= p.sl, o >= p.tp
            else:
                fav, adv = (p.e - lo) / p.risk, (h - p.e) / p.risk
                hit_sl, hit_tp = h >= p.sl, lo <= p.tp
                open_sl, open_tp = o >= p.sl, o <= p.tp
            if not (hit_sl or hit_tp):
                if fav > p.mfe_r:
                    p.mfe_r = fav
                    if fav >= 1.0 and p.tp1_time is None:
                        p.tp1_time = close_time
                if adv > p.mae_r:
                    p.mae_r = adv
                if p.candles_seen >= timeout:
                    self._close(p, c, close_time, "timeout")
                    closed.append(p)
                else:
                    kept.append(p)
                continue
            # a level was touched
            if open_sl or open_tp:
                reason, price, at = ("sl" if open_sl else "tp"), o, candle.open_time
            elif hit_sl and hit_tp:
                reason, at_ms = self._resolve(p, candle, open_ms)
                price, at = (p.sl if reason == "sl" else p.tp), ms_to_dt(at_ms)
            else:
                reason, at = ("sl" if hit_sl else "tp"), close_time
                price = p.sl if hit_sl else p.tp
            r = self._close(p, price, at, reason)
            if reason == "tp":
                p.mfe_r = max(p.mfe_r, r)
                if not open_tp:
                    p.mae_r = max(p.mae_r, adv)
                if p.tp1_time is None and r >= 1.0:
                    p.tp1_time = at
            else:  # this candle's favourable move may have come after the stop: not counted
                p.mae_r = max(p.mae_r, -r)
            closed.append(p)
        if closed:
            if kept:
                self.active[(candle.symbol, candle.interval)] = kept
            else:
                del self.active[(candle.symbol, candle.interval)]
        return closed, kept

    @staticmethod
    def _settle(p: Phantom, settlements: list[tuple[int, Decimal]], mark: float) -> None:
        opened_ms = int(p.opened_at.timestamp() * 1000)
        for t, rate in settlements:
            if opened_ms < t and p.last_ms < t:  # held across t: entered before it, not yet settled for it
                p.funding_r += settlement_r(float(rate), mark, p.risk, p.dir)

    def _resolve(self, p: Phantom, candle: Candle, open_ms: int) -> tuple[str, int]:
        """Which level came first inside a candle that touched both: ask the lower interval."""
        close_ms = open_ms + INTERVAL_MS[candle.interval]
        subs = self.resolver(candle.symbol, candle.interval, open_ms) if self.resolver else None
        if subs:
            for so, sh, sl_, _sc, sub_close in subs:
                if p.dir == 1:
                    s_sl, s_tp = sl_ <= p.sl or so <= p.sl, sh >= p.tp or so >= p.tp
                else:
                    s_sl, s_tp = sh >= p.sl or so >= p.sl, sl_ <= p.tp or so <= p.tp
                if s_sl:
                    return "sl", sub_close
                if s_tp:
                    return "tp", sub_close
        return "sl", close_ms

    def _close(self, p: Phantom, price: float, at: datetime, reason: str) -> float:
        """Close `p`; its realized R."""
        p.status = "closed"
        p.exit_reason = reason
        p.exit_price = price
        p.exit_time = at
        p.realized_r = r = (price - p.e) * p.dir / p.risk + p.funding_r
        p.pnl_pct = (price - p.e) * p.dir / p.e * 100.0
        p.outcome = "win" if reason == "tp" else "loss" if reason == "sl" else "timeout"
        self.observe(p)
        return r


@dataclass
class GroupStats:
    total: int = 0
    wins: int = 0
    r_sum: float = 0.0

    def add(self, p: Phantom) -> None:
        self.total += 1
        self.wins += (p.realized_r or 0) > 0
        self.r_sum += p.realized_r or 0.0

    def as_dict(self) -> GroupFigures:
        return {"total": self.total, "wins": self.wins,
                "win_rate": self.wins / self.total if self.total else None,
                "avg_r": self.r_sum / self.total if self.total else None, "sum_r": round(self.r_sum, 6)}


class GroupFigures(TypedDict):
    total: int
    wins: int
    win_rate: float | None
    avg_r: float | None
    sum_r: float


@dataclass(frozen=True)
class ActionFigures:
    """Closed phantoms' figures per action (EXECUTED, REJECTED, BLOCKED) and over "ALL", and the what-if."""

    actions: dict[str, GroupFigures]
    what_if_rejected_r: float  # the R the rejected signals would have made had they been taken

    def get(self, action: str) -> GroupFigures | None:
        return self.actions.get(action)


@dataclass
class PhantomStats:
    """/phantom_stats: per strategy (and symbol), executed vs rejected vs blocked, and the what-if."""

    groups: dict[tuple[str, str, str], GroupStats] = field(default_factory=dict)  # (strategy, symbol, action)

    def add(self, p: Phantom) -> None:
        if p.status != "closed":
            return
        key = (p.strategy, p.symbol, p.action)
        (self.groups.get(key) or self.groups.setdefault(key, GroupStats())).add(p)

    def by(self, strategy: str | None = None, symbol: str | None = None) -> ActionFigures:
        """Figures per action summed over the matching groups, plus "ALL", and the what-if."""
        out: dict[str, GroupStats] = {}
        for (s, sym, action), g in self.groups.items():
            if (strategy and s != strategy) or (symbol and sym != symbol):
                continue
            for k in (action, "ALL"):
                acc = out.setdefault(k, GroupStats())
                acc.total += g.total
                acc.wins += g.wins
                acc.r_sum += g.r_sum
        return ActionFigures({k: v.as_dict() for k, v in out.items()},
                             out["REJECTED"].r_sum if "REJECTED" in out else 0.0)

    def strategies(self) -> list[str]:
        return sorted({k[0] for k in self.groups})

    def symbols(self) -> list[str]:
        return sorted({k[1] for k in self.groups})
