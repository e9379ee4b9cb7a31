"""MarketState: per (symbol, interval) ring buffers of the last N candles plus incremental indicators.

Memory is bounded: each series holds a fixed (fields × capacity) float64 array however long the desk
runs. Candles arrive in order; a duplicate (same or older open time) is ignored, a jump over missing
candles is reported as a Gap so the engine can apply its gap rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.market.candle import INTERVAL_MS, Candle
from core.market.indicators import IndicatorConfig, Indicators
from core.market.series import Gap

# ring rows: candle fields, then indicator values kept for features/charts
RING_FIELDS = ("open_ms", "open", "high", "low", "close", "volume", "atr", "ema_fast", "ema_mid", "adx", "rsi")
ROW = {name: i for i, name in enumerate(RING_FIELDS)}


class SeriesState:
    __slots__ = ("buf", "capacity", "count", "interval", "ind", "last_candle", "last_open_ms", "step_ms", "symbol")

    def __init__(self, symbol: str, interval: str, capacity: int, cfg: IndicatorConfig) -> None:
        self.symbol, self.interval, self.capacity = symbol, interval, capacity
        self.step_ms = INTERVAL_MS[interval]
        self.buf = np.full((len(RING_FIELDS), capacity), np.nan)
        self.count = 0  # candles ever pushed
        self.last_open_ms = -1
        self.last_candle: Candle | None = None
        self.ind = Indicators(cfg)

    def push(self, c: Candle, open_ms: int) -> None:
        ind = self.ind
        ind.update(open_ms, c.high, c.low, c.close, c.volume)
        self.buf[:, self.count % self.capacity] = (open_ms, c.open, c.high, c.low, c.close, c.volume, ind.atr,
                                                   ind.ema_fast, ind.ema_mid, ind.adx, ind.rsi)
        self.count += 1
        self.last_open_ms = open_ms
        self.last_candle = c

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def last(self, field: str, k: int) -> np.ndarray:
        """The last k values of a ring field, oldest first (fewer when fewer are held)."""
        k = min(k, len(self))
        end = self.count % self.capacity
        row = self.buf[ROW[field]]
        if k <= end:
            return row[end - k:end]
        return np.concatenate((row[self.capacity - (k - end):], row[:end]))

    def value(self, field: str, back: int = 0) -> float:
        """A ring field `back` candles ago (0 = the latest); NaN when not held."""
        if back >= len(self):
            return float("nan")
        return float(self.buf[ROW[field], (self.count - 1 - back) % self.capacity])


@dataclass(frozen=True, slots=True)
class Update:
    series: SeriesState | None  # None: a duplicate, ignored
    gap: Gap | None = None


class MarketState:
    def __init__(self, capacity: int = 1000, cfg: IndicatorConfig = IndicatorConfig()) -> None:
        self.capacity, self.cfg = capacity, cfg
        self.series: dict[tuple[str, str], SeriesState] = {}

    def get(self, symbol: str, interval: str) -> SeriesState | None:
        return self.series.get((symbol, interval))

    def update(self, candle: Candle) -> Update:
        key = (candle.symbol, candle.interval)
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = SeriesState(candle.symbol, candle.interval, self.capacity, self.cfg)
        open_ms = candle.open_ms
        if open_ms <= s.last_open_ms:
            return Update(None)
        gap = None
        if s.count and open_ms - s.last_open_ms > s.step_ms:
            gap = Gap(candle.symbol, candle.interval, s.last_open_ms, open_ms)
        s.push(candle, open_ms)
        return Update(s, gap)

    def nbytes(self) -> int:
        return sum(s.buf.nbytes for s in self.series.values())
