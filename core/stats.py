"""Trading statistics: pure functions shared by /stats, the replay report, snapshots and the guards.

Definitions
- A trade is a closed trade; a win has net PnL > 0, a loss net PnL <= 0 (fees and funding included).
- win rate = wins / trades. profit factor = gross profit / |gross loss| (None without losses).
- expectancy (USD) = mean net PnL; expectancy (R) = mean realized R of trades that have one (the price
  move over the stop distance). Net R = net PnL (fees and funding included) / the money at risk at
  entry (qty × |entry fill − initial stop|); expectancy in net R = its mean over the trades that know
  their risk (what `optimize` maximizes by default).
- max drawdown: the largest fall of the equity curve (starting capital + cumulative net PnL, in exit
  order) from its running peak, in USD and as % of that peak.
- daily returns: net PnL per UTC day of exit / equity at the start of that day, over every calendar
  day from the first to the last exit, or of a given span (a backtest's period); days without trades
  count as 0. Monthly returns: the same per UTC calendar month.
- Sharpe = mean(daily returns) / std(daily returns) × √365; Sortino uses the downside deviation
  (root mean square of the negative daily returns) instead of the std. None with fewer than 2 days.
- Calmar = annualised compound return of the daily returns ((end / start equity)^(365 / days) − 1)
  / max drawdown (as a fraction of its peak). None with fewer than 2 days or no drawdown.
- the max drawdown's dates: the largest USD fall's peak (when that equity was first reached; the start
  for the starting capital), trough, and recovery (the first exit back at or above the peak, or None).
- buy-and-hold: equal weights in each symbol from its first to its last close (no fees): the mean of
  last / first − 1.
- average holding time: mean of exit − entry, in hours.
- daily average = net PnL / calendar days from the first entry to the last exit (at least 1).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypedDict

MIN_RATIO_DAYS = 30  # Sharpe / Sortino / Calmar over fewer days are noise: flagged, not hidden


@dataclass(frozen=True, slots=True)
class TradeFacts:
    """What the statistics need of a closed trade."""

    id: str
    symbol: str
    strategy: str | None
    entry_time: datetime
    exit_time: datetime
    net_pnl: Decimal
    fees: Decimal = Decimal(0)
    realized_r: float | None = None
    funding: Decimal = Decimal(0)  # received (+) / paid (−), already inside net_pnl
    risk: Decimal | None = None  # money lost at the initial stop, before costs (qty × |entry − stop|); None: unknown


def facts_of(t: Any) -> TradeFacts:
    """The facts of a closed trade record (core.ledger.TradeRecord or a trades row)."""
    return TradeFacts(t.id, t.symbol, t.strategy, t.entry_time, t.exit_time, t.net_pnl, t.fees, t.realized_r,
                      t.funding)


def _f(x: Decimal) -> float:
    return float(x)


def net_r(t: TradeFacts) -> float | None:
    return float(t.net_pnl / t.risk) if t.risk else None


def expectancy_net_r(trades: Iterable[TradeFacts]) -> float | None:
    rs = [r for t in trades if (r := net_r(t)) is not None]
    return statistics.fmean(rs) if rs else None


def equity_curve(trades: Sequence[TradeFacts], capital: Decimal) -> list[tuple[datetime, float]]:
    equity = _f(capital)
    curve = []
    for t in sorted(trades, key=lambda t: (t.exit_time, t.id)):
        equity += _f(t.net_pnl)
        curve.append((t.exit_time, equity))
    return curve


def max_drawdown(curve: Iterable[float], start: float) -> tuple[float, float]:
    """(largest fall in USD, the same as % of its peak)."""
    peak, worst, worst_pct = start, 0.0, 0.0
    for equity in curve:
        peak = max(peak, equity)
        fall = peak - equity
        if fall > worst:
            worst = fall
        if peak > 0 and fall / peak * 100 > worst_pct:
            worst_pct = fall / peak * 100
    return worst, worst_pct


def daily_pnl(trades: Sequence[TradeFacts]) -> dict[date, float]:
    by_day: dict[date, float] = defaultdict(float)
    for t in trades:
        by_day[t.exit_time.date()] += _f(t.net_pnl)
    return dict(sorted(by_day.items()))


def daily_returns(trades: Sequence[TradeFacts], capital: Decimal, span: tuple[date, date] | None = None) -> list[float]:
    """One return per calendar day of `span` (default: first to last exit day)."""
    pnl = daily_pnl(trades)
    if span is None:
        if not pnl:
            return []
        span = min(pnl), max(pnl)
    first, last = span
    equity, out = _f(capital), []
    day = first
    while day <= last:
        p = pnl.get(day, 0.0)
        out.append(p / equity if equity > 0 else 0.0)
        equity += p
        day += timedelta(days=1)
    return out


def sharpe(returns: Sequence[float]) -> float | None:
    if len(returns) < 2:
        return None
    sd = statistics.pstdev(returns)
    return statistics.fmean(returns) / sd * math.sqrt(365) if sd > 0 else None


def sortino(returns: Sequence[float]) -> float | None:
    if len(returns) < 2:
        return None
    downside = math.sqrt(sum(r * r for r in returns if r < 0) / len(returns))
    return statistics.fmean(returns) / downside * math.sqrt(365) if downside > 0 else None


@dataclass(frozen=True, slots=True)
class MonthReturn:
    month: str  # YYYY-MM (UTC)
    trades: int
    net_pnl: float
    ret: float  # net PnL / equity at the start of the month


def monthly_returns(trades: Sequence[TradeFacts], capital: Decimal, span: tuple[date, date]) -> list[MonthReturn]:
    """One row per calendar month of `span`, months without exits included."""
    by_month: dict[str, list[float]] = defaultdict(list)
    for t in sorted(trades, key=lambda t: (t.exit_time, t.id)):
        by_month[f"{t.exit_time:%Y-%m}"].append(_f(t.net_pnl))
    equity, out = _f(capital), []
    year, month = span[0].year, span[0].month
    while (year, month) <= (span[1].year, span[1].month):
        key = f"{year:04d}-{month:02d}"
        pnl = sum(by_month.get(key, []))
        out.append(MonthReturn(key, len(by_month.get(key, [])), pnl, pnl / equity if equity > 0 else 0.0))
        equity += pnl
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def calmar(returns: Sequence[float], max_drawdown_pct: float) -> float | None:
    if len(returns) < 2 or max_drawdown_pct <= 0:
        return None
    growth = max(0.0, math.prod(1 + r for r in returns))
    return (growth ** (365 / len(returns)) - 1) / (max_drawdown_pct / 100)


@dataclass(frozen=True, slots=True)
class Drawdown:
    usd: float
    pct: float  # of the peak it fell from
    peak: float
    peak_at: datetime
    trough_at: datetime
    recovered_at: datetime | None  # None: not recovered (yet)


def worst_drawdown(curve: Sequence[tuple[datetime, float]], start: float, start_at: datetime) -> Drawdown | None:
    """The largest fall in USD of max_drawdown()'s rule, with its dates (None: the curve never fell)."""
    peak, peak_at = start, start_at
    worst: Drawdown | None = None
    trough = 0
    for i, (at, equity) in enumerate(curve):
        if equity > peak:
            peak, peak_at = equity, at
        fall = peak - equity
        if fall > (worst.usd if worst else 0.0):
            worst, trough = Drawdown(fall, fall / peak * 100 if peak > 0 else 0.0, peak, peak_at, at, None), i
    if worst is None:
        return None
    back = next((at for at, equity in curve[trough + 1:] if equity >= worst.peak), None)
    return Drawdown(worst.usd, worst.pct, worst.peak, worst.peak_at, worst.trough_at, back)


@dataclass(frozen=True, slots=True)
class BuyAndHold:
    ret: float  # equal-weight mean of last / first - 1
    pnl: float  # on the capital
    by_symbol: dict[str, float]  # symbol -> last / first - 1


def buy_and_hold(closes: dict[str, tuple[float, float]], capital: Decimal) -> BuyAndHold | None:
    """closes: symbol -> (first close, last close)."""
    rets = {s: last / first - 1 for s, (first, last) in sorted(closes.items()) if first > 0}
    if not rets:
        return None
    ret = statistics.fmean(rets.values())
    return BuyAndHold(ret, ret * _f(capital), rets)


class Extreme(TypedDict):
    id: str
    net_pnl: float


class Summary(TypedDict):
    """The headline figures of a set of closed trades (`summarize`, and its columnar twin in storage)."""

    trades: int
    wins: int
    losses: int
    win_rate: float | None
    profit_factor: float | None
    net_pnl: float
    gross_profit: float
    gross_loss: float
    fees: float
    funding: float
    avg_pnl: float | None
    median_pnl: float | None
    expectancy_usd: float | None
    expectancy_r: float | None
    best_trade: Extreme | None
    worst_trade: Extreme | None
    max_drawdown: float
    max_drawdown_pct: float
    sharpe: float | None
    sortino: float | None
    return_days: int  # the daily returns Sharpe and Sortino rest on
    avg_holding_h: float | None
    daily_avg: float | None


def summarize(trades: Sequence[TradeFacts], capital: Decimal, span: tuple[date, date] | None = None) -> Summary:
    """The headline figures of a set of closed trades (Sharpe and Sortino over `span`'s days if given)."""
    n = len(trades)
    pnls = [_f(t.net_pnl) for t in trades]
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p <= 0]
    gross_profit, gross_loss = sum(wins), sum(losses)
    rs = [t.realized_r for t in trades if t.realized_r is not None]
    curve = [e for _, e in equity_curve(trades, capital)]
    dd, dd_pct = max_drawdown(curve, _f(capital))
    returns = daily_returns(trades, capital, span)
    span_days = 1.0
    if trades:
        held = max(t.exit_time for t in trades) - min(t.entry_time for t in trades)
        span_days = max(1.0, held.total_seconds() / 86_400)
    best = max(trades, key=lambda t: (t.net_pnl, t.id), default=None)
    worst = min(trades, key=lambda t: (t.net_pnl, t.id), default=None)
    return {
        "trades": n,
        "wins": len(wins),
        "losses": len(losses),
        "win_rate": len(wins) / n if n else None,
        "profit_factor": gross_profit / -gross_loss if gross_loss < 0 else None,
        "net_pnl": sum(pnls),
        "gross_profit": gross_profit,
        "gross_loss": gross_loss,
        "fees": sum(_f(t.fees) for t in trades),
        "funding": sum(_f(t.funding) for t in trades),
        "avg_pnl": statistics.fmean(pnls) if pnls else None,
        "median_pnl": statistics.median(pnls) if pnls else None,
        "expectancy_usd": statistics.fmean(pnls) if pnls else None,
        "expectancy_r": statistics.fmean(rs) if rs else None,
        "best_trade": {"id": best.id, "net_pnl": _f(best.net_pnl)} if best else None,
        "worst_trade": {"id": worst.id, "net_pnl": _f(worst.net_pnl)} if worst else None,
        "max_drawdown": dd,
        "max_drawdown_pct": dd_pct,
        "sharpe": sharpe(returns),
        "sortino": sortino(returns),
        "return_days": len(returns),  # the daily returns Sharpe and Sortino rest on
        "avg_holding_h": statistics.fmean((t.exit_time - t.entry_time).total_seconds() / 3600 for t in trades)
        if trades else None,
        "daily_avg": sum(pnls) / span_days if trades else None,
    }


def breakdown(trades: Sequence[TradeFacts], capital: Decimal, key: str) -> dict[str, Summary]:
    """summarize() per symbol or per strategy."""
    groups: dict[str, list[TradeFacts]] = defaultdict(list)
    for t in trades:
        groups[str(getattr(t, key) or "-")].append(t)
    return {k: summarize(v, capital) for k, v in sorted(groups.items())}


@dataclass(frozen=True)
class EquityCurve:
    """The equity curve and its drawdown below the running peak, at most about 2 × `points` points: each
    bucket of trades keeps its last point and its deepest drawdown, so the worst fall is never averaged away."""

    times_ms: list[int]  # exit times, ms since the epoch
    equity: list[float]
    drawdown_pct: list[float]  # ≤ 0: below the running peak, % of that peak
    capital: float
    trades: int


def equity_drawdown(exit_ms: Sequence[int], pnl: Sequence[float], capital: Decimal,
                    points: int = 1000) -> EquityCurve:
    """`exit_ms`/`pnl` in exit order (the max drawdown definition above, per trade)."""
    import numpy as np  # only here: the rest of this module is plain Python

    start = float(capital)
    t = np.asarray(exit_ms, dtype=np.int64)
    equity = start + np.cumsum(np.asarray(pnl, dtype=np.float64))
    peak = np.maximum(np.maximum.accumulate(equity), start) if len(equity) else equity
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, (equity - peak) / peak * 100, 0.0)
    n = len(equity)
    if n > 2 * points:
        bounds = np.linspace(0, n, points + 1).astype(np.int64)
        keep = {n - 1}
        for lo, hi in itertools.pairwise(bounds.tolist()):
            if hi > lo:
                keep.update((hi - 1, lo + int(np.argmin(dd[lo:hi]))))
        index = np.array(sorted(keep))
        t, equity, dd = t[index], equity[index], dd[index]
    return EquityCurve(t.tolist(), equity.tolist(), dd.tolist(), start, n)
