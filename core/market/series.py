"""Columnar candle series: one (symbol, interval) as numpy arrays, and the gaps in it.

Files, the candle store and the synthetic market all hand candles around in this form; `Candle`
objects are made only where the engine consumes them one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from core.market.candle import INTERVAL_MS, Candle, ms_to_dt

FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class Gap:
    """Candles missing between two present ones (a real exchange outage: nothing is invented)."""

    symbol: str
    interval: str
    last_before_ms: int  # open time of the last candle before the gap
    first_after_ms: int  # open time of the first candle after it

    @property
    def missing(self) -> int:
        return (self.first_after_ms - self.last_before_ms) // INTERVAL_MS[self.interval] - 1

    def __str__(self) -> str:
        before, after = ms_to_dt(self.last_before_ms), ms_to_dt(self.first_after_ms)
        return (f"{self.symbol} {self.interval}: {self.missing} candles missing between "
                f"{before:%Y-%m-%d %H:%M} and {after:%Y-%m-%d %H:%M} UTC")


@dataclass(frozen=True)
class CandleSeries:
    symbol: str
    interval: str
    open_ms: np.ndarray  # int64, strictly increasing
    open: np.ndarray  # float64 ...
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    turnover: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.open_ms)

    @classmethod
    def of_columns(cls, symbol: str, interval: str, open_ms: np.ndarray, columns: Iterable[np.ndarray],
                   turnover: np.ndarray | None = None) -> CandleSeries:
        """`columns` in FIELDS order (open, high, low, close, volume)."""
        o, h, lo, c, v = columns
        return cls(symbol, interval, open_ms, o, h, lo, c, v, turnover)

    def gaps(self) -> list[Gap]:
        step = INTERVAL_MS[self.interval]
        idx = np.flatnonzero(np.diff(self.open_ms) > step)
        return [Gap(self.symbol, self.interval, int(self.open_ms[i]), int(self.open_ms[i + 1])) for i in idx]

    def window(self, start_ms: int | None = None, end_ms: int | None = None) -> CandleSeries:
        """Candles with start_ms <= open time < end_ms."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.open_ms, start_ms, "left"))
        hi = len(self) if end_ms is None else int(np.searchsorted(self.open_ms, end_ms, "left"))
        return self.take(slice(lo, hi))

    def take(self, index: slice | np.ndarray) -> CandleSeries:
        return CandleSeries.of_columns(self.symbol, self.interval, self.open_ms[index],
                                       (getattr(self, f)[index] for f in FIELDS),
                                       turnover=None if self.turnover is None else self.turnover[index])

    def candle(self, i: int) -> Candle:
        return Candle.at(self.symbol, self.interval, self.open_ms.item(i), self.open.item(i), self.high.item(i),
                         self.low.item(i), self.close.item(i), self.volume.item(i),
                         None if self.turnover is None else self.turnover.item(i))

    def candles(self) -> Iterator[Candle]:
        rows = Rows(self)
        for i in range(len(self)):
            yield rows.candle(i)

    @classmethod
    def from_candles(cls, symbol: str, interval: str, candles: list[Candle]) -> CandleSeries:
        turnover = [c.turnover for c in candles]
        known = None if any(t is None for t in turnover) else np.array(turnover, dtype=np.float64)
        return cls.of_columns(symbol, interval, np.array([c.open_ms for c in candles], dtype=np.int64),
                              (np.array([getattr(c, f) for c in candles], dtype=np.float64) for f in FIELDS), known)


class Rows:
    """The candles of one series by row, its columns turned into Python numbers a block of rows at a time: a
    replay walks each series forward, so every row is converted once, in bulk (reading numpy arrays one element
    at a time was most of the cost of a replayed candle), and memory stays bounded however long the series."""

    BLOCK = 512

    __slots__ = ("_c", "_end", "_h", "_l", "_ms", "_o", "_start", "_t", "_v", "series")

    def __init__(self, series: CandleSeries) -> None:
        self.series = series
        self._start = self._end = 0  # the rows [start, end) are held as lists
        self._ms: list[int] = []
        self._o: list[float] = []
        self._h: list[float] = []
        self._l: list[float] = []
        self._c: list[float] = []
        self._v: list[float] = []
        self._t: list[float] | None = None

    def candle(self, i: int) -> Candle:
        if not self._start <= i < self._end:
            self._load(i)
        j = i - self._start
        t = self._t
        return Candle.at(self.series.symbol, self.series.interval, self._ms[j], self._o[j], self._h[j], self._l[j],
                         self._c[j], self._v[j], None if t is None else t[j])

    def _load(self, i: int) -> None:
        s, end = self.series, i + self.BLOCK
        self._start, self._end = i, min(end, len(s))
        self._ms = s.open_ms[i:end].tolist()
        self._o, self._h, self._l = s.open[i:end].tolist(), s.high[i:end].tolist(), s.low[i:end].tolist()
        self._c, self._v = s.close[i:end].tolist(), s.volume[i:end].tolist()
        self._t = None if s.turnover is None else s.turnover[i:end].tolist()
