"""One window of a study replayed in memory: the replay's own engine (core.runner.paper_engine: strategies,
phantoms, risk gate, the paper venue with its fees, slippage and funding) over the candles of the window,
warmed on the candles before it, with MemoryStore and MemoryLedger instead of a database.

The candles are loaded once per process (Market). The indicators do not depend on any parameter, so each
window's warm-up is done once per process and every trial starts from a copy of that warmed market state:
the same state the replay's warm-up builds, without redoing it per trial. A window's replay depends only on
its parameters and the candles."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta

from core.config import BotConfig
from core.funding import FundingSchedule
from core.ledger import MemoryLedger, TradeRecord
from core.market.candle import Candle, ms_to_dt
from core.market.replay import WARMUP_CANDLES, ReplayFeed, history_before
from core.market.series import CandleSeries
from core.optimize.objectives import WindowTrades
from core.optimize.windows import Window
from core.persistence import MemoryStore
from core.runner import paper_engine, run
from core.stats import TradeFacts, facts_of


@dataclass(frozen=True)
class Market:
    """The candles and funding a study replays."""

    series: tuple[CandleSeries, ...]
    funding: FundingSchedule
    slow: str
    fast: str

    @property
    def symbols(self) -> list[str]:
        return sorted({s.symbol for s in self.series})


@dataclass(frozen=True, slots=True)
class WindowRun:
    window: Window
    closed: WindowTrades
    trades: tuple[TradeRecord, ...]  # the same closed trades, as the ledger holds them
    signals: int
    executed: int
    candles: int  # replayed (the warm-up aside)
    open_at_end: int  # positions still open at the window's end: not counted, they have no outcome yet
    halted: bool  # the drawdown guard stopped the bot in this window (it stays stopped, as the desk would)
    elapsed_s: float


async def _stream(candles: Iterator[Candle]) -> AsyncIterator[Candle]:
    for candle in candles:
        yield candle


class WindowReplayer:
    """Replays windows of one market (`ml`: with the ML filter, trained inline from nothing in each window)."""

    def __init__(self, market: Market, *, ml: bool = False) -> None:
        self.market, self.ml = market, ml
        self._warmed: dict[Window, bytes] = {}  # the window's MarketState after its warm-up, pickled

    def run(self, config: BotConfig, window: Window) -> WindowRun:
        started = time.perf_counter()
        scorer = None
        if self.ml:  # scikit-learn takes a second to import: only when asked for
            from core.ml.filter import FilterSettings, MLScorer

            scorer = MLScorer(config.id, FilterSettings.for_bot(config))
        warmed = self._warmed.get(window)  # our own pickle, made below
        engine, trader = paper_engine(config, self.market.funding, scorer,
                                      None if warmed is None else pickle.loads(warmed))
        if warmed is None:  # the first trial of this process warms it, the others start from a copy
            for candle in history_before(self.market.series, window.start_ms, WARMUP_CANDLES,
                                         not_before_ms=window.warm_from_ms):
                engine.warm(candle)
            self._warmed[window] = pickle.dumps(engine.market, pickle.HIGHEST_PROTOCOL)
        ledger = MemoryLedger()
        feed = ReplayFeed(self.market.series, start_ms=window.start_ms, end_ms=window.end_ms)
        report = asyncio.run(run(engine, _stream(feed.candles()), MemoryStore(), ledger=ledger, flush_every=1 << 30))
        closed = sorted(ledger.closed(), key=lambda t: t.id)
        facts: list[TradeFacts] = []
        for t in closed:
            stop = ledger.opening_stop.get(t.id)
            facts.append(replace(facts_of(t), risk=None if stop is None else t.qty * abs(t.entry_price - stop)))
        span = ms_to_dt(window.start_ms).date(), (ms_to_dt(window.end_ms) - timedelta(microseconds=1)).date()
        return WindowRun(window, WindowTrades(tuple(facts), span), tuple(closed), engine.counters["signals"],
                         engine.counters["signals_executed"], report.processed, len(trader.trades),
                         trader.state.halted, time.perf_counter() - started)
