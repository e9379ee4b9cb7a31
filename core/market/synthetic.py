"""SyntheticFeed: a seeded, regime-switching market for demos and tests (`make run`'s default market).

One-minute candles are simulated and aggregated to any interval. A market factor switches between
trend-up, trend-down, range (mean-reverting) and volatility-burst regimes with random durations;
every symbol follows it with its own beta plus idiosyncratic noise and regimes of its own, so symbols
are correlated but not identical. The same seed gives the same market, candle for candle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from core.market.candle import INTERVAL_MS, dt_to_ms
from core.market.replay import ReplayFeed
from core.market.series import CandleSeries

MINUTE_MS = 60_000

# regime: (drift per minute in log terms, volatility multiplier, mean reversion per minute)
REGIMES = {
    "trend_up": (1.5e-5, 1.0, 0.0),
    "trend_down": (-1.5e-5, 1.1, 0.0),
    "range": (0.0, 0.8, 0.004),
    "burst": (0.0, 3.0, 0.0),
}
REGIME_NAMES = tuple(REGIMES)
# mean regime duration in minutes (geometric), and how likely each regime is chosen next
MEAN_DURATION = {"trend_up": 1440, "trend_down": 1200, "range": 1800, "burst": 240}
NEXT_WEIGHTS = np.array([0.3, 0.25, 0.35, 0.10])


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str
    price: float  # starting price
    beta: float  # sensitivity to the market factor
    vol: float  # per-minute idiosyncratic volatility (log)


DEFAULT_SYMBOLS = (
    SymbolSpec("BTCUSDT", 65_000.0, 1.0, 0.0002),
    SymbolSpec("ETHUSDT", 3_400.0, 1.2, 0.0004),
    SymbolSpec("SOLUSDT", 150.0, 1.4, 0.0006),
    SymbolSpec("XRPUSDT", 0.6, 1.2, 0.0006),
    SymbolSpec("BNBUSDT", 580.0, 0.9, 0.0004),
    SymbolSpec("DOGEUSDT", 0.15, 1.5, 0.0008),
)


def _regime_path(rng: np.random.Generator, minutes: int) -> np.ndarray:
    """Regime index per minute."""
    out = np.empty(minutes, np.int8)
    t, current = 0, int(rng.choice(len(REGIME_NAMES), p=NEXT_WEIGHTS))
    while t < minutes:
        length = int(rng.geometric(1.0 / MEAN_DURATION[REGIME_NAMES[current]]))
        out[t:t + length] = current
        t += length
        current = int(rng.choice(len(REGIME_NAMES), p=NEXT_WEIGHTS))
    return out


def _log_returns(rng: np.random.Generator, regimes: np.ndarray, base_vol: float) -> np.ndarray:
    """Per-minute log returns of a process following `regimes` (with mean reversion inside ranges)."""
    drift, volmul, revert = (np.array([REGIMES[n][k] for n in REGIME_NAMES])[regimes] for k in range(3))
    shocks = rng.standard_normal(len(regimes)) * base_vol * volmul + drift
    if not revert.any():
        return shocks
    # mean reversion needs the running level: anchor = level at the start of each range episode
    out = np.empty_like(shocks)
    level, anchor, prev = 0.0, 0.0, -1
    for i in range(len(shocks)):
        if revert[i] and regimes[i] != prev:
            anchor = level
        out[i] = shocks[i] - revert[i] * (level - anchor)
        level += out[i]
        prev = regimes[i]
    return out


def _decimals(price: float) -> int:
    """Five significant digits at the starting price, like a real instrument's tick."""
    return int(4 - np.floor(np.log10(price)))


def simulate_minutes(spec: SymbolSpec, market: np.ndarray, seed: int, start_ms: int) -> CandleSeries:
    rng = np.random.default_rng(seed)
    minutes = len(market)
    own = _log_returns(rng, _regime_path(rng, minutes), spec.vol)
    logp = np.log(spec.price) + np.cumsum(spec.beta * market + own)
    close = np.exp(logp)
    places = _decimals(spec.price)
    tick = 10.0 ** -places
    close = np.maximum(np.round(close, places), tick)
    open_ = np.concatenate([[close[0]], close[:-1]])
    wiggle = np.abs(rng.standard_normal((2, minutes))) * (spec.vol + np.abs(market)) * 0.8
    high = np.round(np.maximum(open_, close) * (1 + wiggle[0]), places)
    low = np.maximum(np.round(np.minimum(open_, close) * (1 - wiggle[1]), places), tick)
    move = np.abs(np.diff(np.log(np.concatenate([[open_[0]], close])))) / spec.vol
    volume = np.round(rng.lognormal(0.0, 0.5, minutes) * (1 + move) * 1_000_000 / spec.price, 3)
    open_ms = start_ms + np.arange(minutes, dtype=np.int64) * MINUTE_MS
    return CandleSeries(spec.symbol, "1", open_ms, open_, high, low, close, volume)


def aggregate(minutes: CandleSeries, interval: str) -> CandleSeries:
    """Whole candles of `interval` from 1-minute candles aligned to the interval grid."""
    k = INTERVAL_MS[interval] // MINUTE_MS
    if k == 1:
        return minutes
    first = int(np.argmax(minutes.open_ms % INTERVAL_MS[interval] == 0))
    n = (len(minutes) - first) // k
    sl = slice(first, first + n * k)

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[sl].reshape(n, k)

    return CandleSeries(
        minutes.symbol, interval, blocks(minutes.open_ms)[:, 0], blocks(minutes.open)[:, 0],
        blocks(minutes.high).max(axis=1), blocks(minutes.low).min(axis=1), blocks(minutes.close)[:, -1],
        np.round(blocks(minutes.volume).sum(axis=1), 3),
    )


def synthetic_series(symbols: Sequence[SymbolSpec], intervals: Sequence[str], start: datetime, days: float,
                     seed: int) -> list[CandleSeries]:
    start_ms = dt_to_ms(start)
    if start_ms % INTERVAL_MS["D"]:
        raise ValueError("the synthetic market starts at a UTC midnight so every interval is aligned")
    minutes = int(days * 1440)
    rng = np.random.default_rng(seed)
    market = _log_returns(rng, _regime_path(rng, minutes), 0.0005)
    out: list[CandleSeries] = []
    for n, spec in enumerate(symbols):
        one_minute = simulate_minutes(spec, market, seed * 1000 + n + 1, start_ms)
        out.extend(aggregate(one_minute, interval) for interval in intervals)
    return out


class SyntheticFeed(ReplayFeed):
    """The synthetic market as a Feed: `warmup_days` of history, then `days` streamed."""

    def __init__(self, *, symbols: Sequence[SymbolSpec] = DEFAULT_SYMBOLS, intervals: Sequence[str] = ("15", "5"),
                 start: datetime, days: float = 30, warmup_days: float = 5, seed: int = 7) -> None:
        series = synthetic_series(symbols, intervals, start, days + warmup_days, seed)
        super().__init__(series, start_ms=dt_to_ms(start) + int(warmup_days * INTERVAL_MS["D"]))
