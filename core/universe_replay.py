"""The universe rule in a replay: listings and 24 h turnovers computed from the candle files at the replay's
market time, and the refreshes at fixed market times, so that a replay with a rule is as deterministic as one
with a list.

- Listing: every symbol with candles, "launched" at its first candle (the files know no earlier listing).
- 24 h turnover at `now`: the sum over the candles of the symbol's finest interval that opened in the 24 h
  before `now` and had closed by then. A file's `turnover` column (quote volume, as Bybit's) is summed as it
  is; without one, close × volume estimates it (and the symbol is named in `estimated`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np

from core.market.candle import INTERVAL_MS, dt_to_ms, ms_to_dt
from core.market.series import CandleSeries
from core.universe import QUOTE, Listing, Turnover, Universe, UniverseRule, select

DAY_MS = 86_400_000


class _Turnovers:
    """One symbol's finest series as cumulative sums: any 24 h window is two binary searches."""

    def __init__(self, series: CandleSeries) -> None:
        self.size = INTERVAL_MS[series.interval]
        self.open_ms = np.asarray(series.open_ms, dtype=np.int64)
        values = series.turnover if series.turnover is not None else None
        if values is None or np.isnan(values).any():
            values = np.asarray(series.close, dtype=np.float64) * np.asarray(series.volume, dtype=np.float64)
            self.estimated = True
        else:
            self.estimated = False
        self.cumulative = np.concatenate(([0.0], np.cumsum(values, dtype=np.float64)))

    def at(self, now_ms: int) -> float | None:
        first = int(np.searchsorted(self.open_ms, now_ms - DAY_MS, side="left"))
        last = int(np.searchsorted(self.open_ms, now_ms - self.size, side="right"))  # closed by now
        if last <= first:
            return None
        return float(self.cumulative[last] - self.cumulative[first])


class SeriesDirectory:
    """core.universe.MarketDirectory over candle series (a replay's files)."""

    def __init__(self, series: Sequence[CandleSeries]) -> None:
        finest: dict[str, CandleSeries] = {}
        for s in series:
            if len(s) and (s.symbol not in finest or INTERVAL_MS[s.interval] < INTERVAL_MS[finest[s.symbol].interval]):
                finest[s.symbol] = s
        self._by_symbol = {symbol: _Turnovers(s) for symbol, s in sorted(finest.items())}
        self._launched = {symbol: ms_to_dt(int(min(x.open_ms[0] for x in series if x.symbol == symbol and len(x))))
                          for symbol in self._by_symbol}
        self.estimated = tuple(symbol for symbol, t in self._by_symbol.items() if t.estimated)

    async def listings(self) -> list[Listing]:
        return self.listings_now()

    async def turnovers(self, now: datetime) -> list[Turnover]:
        return self.turnovers_at(now)

    def listings_now(self) -> list[Listing]:
        return [Listing(symbol, "Trading", QUOTE if symbol.endswith(QUOTE) else symbol[-4:], launched)
                for symbol, launched in self._launched.items()]

    def turnovers_at(self, now: datetime) -> list[Turnover]:
        now_ms = dt_to_ms(now)
        out = []
        for symbol, t in self._by_symbol.items():
            value = t.at(now_ms)
            if value is not None:
                out.append(Turnover(symbol, Decimal(repr(round(value, 2)))))
        return out


class UniverseGate:
    """A rule re-applied at every multiple of `refresh` in market time (the first candle applies it at once)."""

    def __init__(self, rule: UniverseRule, directory: SeriesDirectory, refresh: timedelta) -> None:
        self.rule = rule
        self.directory = directory
        self.refresh_ms = int(refresh.total_seconds() * 1000)
        if self.refresh_ms <= 0:
            raise ValueError("the refresh interval must be positive")
        self.current: Universe | None = None
        self._next_ms: int | None = None
        self.changes = 0

    def at(self, now_ms: int) -> Universe | None:
        """The new selection when a refresh is due at market time `now_ms`, else None."""
        if self._next_ms is not None and now_ms < self._next_ms:
            return None
        self._next_ms = (now_ms // self.refresh_ms + 1) * self.refresh_ms
        now = ms_to_dt(now_ms)
        chosen = select(self.rule, self.directory.listings_now(), self.directory.turnovers_at(now), now).universe
        if self.current is None or set(chosen.symbols) != set(self.current.symbols):
            self.changes += self.current is not None
            self.current = chosen
            return chosen
        self.current = chosen
        return None
