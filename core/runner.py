"""Drive an engine over a candle stream, persisting in batches, resuming from the last checkpoint."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from core.config import BotConfig
from core.engine import CandleResult, Engine
from core.exchange.paper import PaperBroker
from core.funding import FundingSchedule
from core.instruments import Instruments
from core.ledger import Ledger, LedgerEvent
from core.market.candle import Candle
from core.market.replay import sort_key
from core.market.state import MarketState
from core.ml.scorer import Scorer
from core.persistence import Batch, EngineStore, StoreUnavailable
from core.trader import Trader

log = logging.getLogger(__name__)


def paper_engine(config: BotConfig, funding: FundingSchedule, scorer: Scorer | None = None,
                 market: MarketState | None = None) -> tuple[Engine, Trader]:
    """The engine of a replay: the trader on the paper venue (fills on the fast interval, the bot's fees and
    slippage, funding from `funding`, which the phantoms earn too). `replay` and every `optimize` trial build
    it here, so that a trial replays exactly what a replay of its window does (`market`: already warmed)."""
    instruments = Instruments()
    trader = Trader(config, instruments, PaperBroker(
        instruments, config.capital, slippage_bps=config.slippage_bps, taker_fee_pct=config.taker_fee_pct,
        watch_interval=config.fast_interval, funding=funding, maker_fee_pct=config.maker_fee_pct,
        entry_timeout_s=config.entry_timeout_s), mode="replay")
    return Engine(config, instruments=instruments, trader=trader, scorer=scorer, funding=funding, market=market), trader


@dataclass
class RunReport:
    resumed_from: tuple[int, int, str] | None
    warmed: int = 0
    processed: int = 0
    elapsed_s: float = 0.0


async def run(engine: Engine, candles: AsyncIterator[Candle], store: EngineStore, *, flush_every: int = 5000,
              ledger: Ledger | None = None, history: list[Candle] | None = None,
              on_result: Callable[[CandleResult], None] | None = None,
              timer: Callable[[], float] = time.perf_counter, retry_s: float = 1.0,
              idle: Callable[[], bool] | None = None,
              after_restore: Callable[[], Awaitable[None]] | None = None,
              on_saved: Callable[[], None] | None = None,
              now_ms: Callable[[], int] | None = None,
              on_skipped: Callable[[Candle], None] | None = None, ledger_batched: bool = False) -> RunReport:
    """Restore the engine from `store`, warm it on `history` and on every candle up to the checkpoint,
    process the rest, and save a batch (signals + phantoms + checkpoint, one transaction) every
    `flush_every` candles and at the end. Ledger records (trade opens/closes) are written as they happen,
    before the checkpoint that follows them; `ledger_batched` (a replay: nobody reads its trades meanwhile)
    writes a batch's records together, in one transaction, just before its checkpoint. Killing the process at
    any moment loses at most the work since the last batch, which the next run redoes identically (ledger
    writes are upserts).
    A store that is down keeps its batch for the next flush; the run ends only once everything is saved.
    `idle()` true (a live feed with nothing queued) saves at once: live state is never far behind.
    `after_restore` runs once the engine holds its restored state (live: reconciliation with the exchange).
    `on_saved()` follows every batch the store took: everything processed so far is durable.
    `now_ms()` (a live feed): a checkpoint past it was set by a candle that had not closed (stored by an older
    version); it is not trusted, or every real candle before it would only warm the engine.
    `on_skipped(candle)`: a candle at or before the checkpoint, used to warm the indicators only (said, not
    silently dropped)."""
    bot_id = engine.config.id
    restored = await store.restore(bot_id)
    if restored.checkpoint is not None:
        engine.restore(restored.checkpoint, restored.active)
    resume = restored.checkpoint.after if restored.checkpoint else None
    if resume is not None and now_ms is not None and resume[0] > now_ms():
        log.warning("bot %s: its checkpoint lies in the future (a candle not yet closed): resuming from the "
                    "live candles instead", bot_id)
        resume = None
    if after_restore is not None:
        await after_restore()
    report = RunReport(resumed_from=resume)
    for candle in history or ():
        engine.warm(candle)
        report.warmed += 1
    batch = Batch()
    records: list[LedgerEvent] = []  # ledger_batched: the batch's ledger records, not written yet
    next_flush = flush_every
    started = timer()
    retry_after = started  # a failed save is retried on idle only once retry_s has passed: never per candle
    async for candle in candles:
        if resume is not None and sort_key(candle) <= resume:
            engine.warm(candle)
            report.warmed += 1
            if on_skipped is not None:
                on_skipped(candle)
            continue
        result = engine.on_candle(candle)
        batch.add(result)
        if ledger is not None and result.ledger:
            if ledger_batched:
                records.extend(result.ledger)
            else:
                await ledger.record(*result.ledger)
        if on_result is not None:
            on_result(result)
        report.processed += 1
        if batch.candles >= next_flush or (idle is not None and idle() and timer() >= retry_after):
            if records:
                assert ledger is not None
                await ledger.record(*records)  # never raises for a database that is down: the journal takes them
                records = []
            batch.checkpoint = engine.checkpoint()
            if await _save(store, bot_id, batch, on_saved):
                batch = Batch()
                next_flush = flush_every
            else:  # keep working; try again after another flush_every candles, or idle after retry_s
                next_flush = batch.candles + flush_every
                retry_after = timer() + retry_s
    if records:
        assert ledger is not None
        await ledger.record(*records)
    batch.checkpoint = engine.checkpoint()
    while not await _save(store, bot_id, batch, on_saved):  # noqa: ASYNC110 - polling a database until it answers
        await asyncio.sleep(retry_s)
    report.elapsed_s = timer() - started
    return report


async def _save(store: EngineStore, bot_id: str, batch: Batch, on_saved: Callable[[], None] | None) -> bool:
    try:
        await store.save(bot_id, batch)
    except StoreUnavailable as exc:
        log.warning("store unavailable (%s): %d candles of work kept for the next save", exc, batch.candles)
        return False
    if on_saved is not None:
        on_saved()
    return True
