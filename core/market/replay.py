"""ReplayFeed: candle series merged into the order a live desk would have seen them.

Order: by close time; at equal close time the lower timeframe first (a 15m candle comes after the
5m candles it contains), then by symbol. Gaps in the data are reported, never filled.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import AsyncIterator, Iterator, Sequence

import numpy as np

from core.market.candle import INTERVAL_MS, Candle, ms_to_dt
from core.market.series import CandleSeries, Gap, Rows

log = logging.getLogger(__name__)

# A replay yields to the event loop this often so the host keeps answering while it runs.
YIELD_EVERY = 2000
WARMUP_CANDLES = 1000  # per series: the history before a replayed window fed to the indicators


def merge_order(series: Sequence[CandleSeries]) -> tuple[np.ndarray, np.ndarray]:
    """(series index, row index) of every candle, in emission order."""
    if not series:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    symbol_rank = {s: i for i, s in enumerate(sorted({s.symbol for s in series}))}
    which = np.concatenate([np.full(len(s), k, np.int64) for k, s in enumerate(series)])
    row = np.concatenate([np.arange(len(s), dtype=np.int64) for s in series])
    step = np.concatenate([np.full(len(s), INTERVAL_MS[s.interval], np.int64) for s in series])
    close = np.concatenate([s.open_ms for s in series]) + step
    rank = np.concatenate([np.full(len(s), symbol_rank[s.symbol], np.int64) for s in series])
    order = np.lexsort((rank, step, close))  # last key is primary
    return which[order], row[order]


def history_before(series: Sequence[CandleSeries], start_ms: int | None, limit: int,
                   not_before_ms: int | None = None) -> list[Candle]:
    """The last `limit` candles of each series opening before `start_ms` (and at or after `not_before_ms`),
    in merge order: the indicators' warm-up before a replayed window."""
    if start_ms is None:
        return []
    before = [s.window(not_before_ms, start_ms) for s in series]
    before = [s.take(slice(max(0, len(s) - limit), len(s))) for s in before]
    which, row = merge_order(before)
    return [before[w].candle(r) for w, r in zip(which.tolist(), row.tolist(), strict=True)]


def sort_key(candle: Candle) -> tuple[int, int, str]:
    """The merge order of one candle, comparable with what merge_order produced."""
    step = INTERVAL_MS[candle.interval]
    return candle.open_ms + step, step, candle.symbol


class ReplayFeed:
    """The Feed over in-memory series (from files, the candle store, or the synthetic market)."""

    def __init__(self, series: Sequence[CandleSeries], *, start_ms: int | None = None, end_ms: int | None = None,
                 after: tuple[int, int, str] | None = None) -> None:
        """start_ms/end_ms bound the open times streamed (earlier candles serve `history`); `after` resumes
        a replay: candles whose sort_key is <= it were already processed."""
        self.series = list(series)
        self._streamed = [s.window(start_ms, end_ms) for s in self.series]
        self.gaps: list[Gap] = [g for s in self._streamed for g in s.gaps()]
        self._which, self._row = merge_order(self._streamed)
        self._skip = 0
        if after is not None:  # the emission order is sorted by sort_key: binary search
            self._skip = bisect.bisect_right(range(len(self._which)), after, key=self._key)
        self.start_ms = start_ms
        for gap in self.gaps:
            log.info("replay data gap: %s", gap)

    def _key(self, i: int) -> tuple[int, int, str]:
        return sort_key(self._streamed[int(self._which[i])].candle(int(self._row[i])))

    def __len__(self) -> int:
        return len(self._which) - self._skip

    def candles(self) -> Iterator[Candle]:
        rows = [Rows(s) for s in self._streamed]
        for w, r in zip(self._which[self._skip:].tolist(), self._row[self._skip:].tolist(), strict=True):
            yield rows[w].candle(r)

    async def stream(self) -> AsyncIterator[Candle]:
        for i, candle in enumerate(self.candles()):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            yield candle

    async def history(self, symbol: str, interval: str, limit: int) -> list[Candle]:
        for s in self.series:
            if s.symbol == symbol and s.interval == interval:
                before = s.window(None, self.start_ms) if self.start_ms is not None else s.take(slice(0, 0))
                return list(before.take(slice(max(0, len(before) - limit), len(before))).candles())
        return []

    async def close(self) -> None:
        """Nothing to let go of: the series are in memory."""

    def describe(self) -> str:
        first = ms_to_dt(int(min(s.open_ms[0] for s in self._streamed if len(s)))) if len(self) else None
        return f"{len(self)} candles from {first:%Y-%m-%d} in {len(self._streamed)} series" if first else "no candles"
