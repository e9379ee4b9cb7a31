"""Drive an engine over a candle stream, persisting in batches, resuming from the last checkpoint."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from core.engine import CandleResult, Engine
from core.market.candle import Candle
from core.market.replay import sort_key
from core.persistence import Batch, EngineStore

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    resumed_from: tuple[int, int, str] | None
    warmed: int = 0
    processed: int = 0
    elapsed_s: float = 0.0


async def run(engine: Engine, candles: AsyncIterator[Candle], store: EngineStore, *, flush_every: int = 5000,
              history: list[Candle] | None = None, on_result: Callable[[CandleResult], None] | None = None,
              timer: Callable[[], float] = time.perf_counter) -> RunReport:
    """Restore the engine from `store`, warm it on `history` and on every candle up to the checkpoint,
    process the rest, and save a batch (signals + phantoms + checkpoint, one transaction) every
    `flush_every` candles and at the end. Killing the process at any moment loses at most the work
    since the last batch, which the next run redoes identically."""
    bot_id = engine.config.id
    restored = await store.restore(bot_id)
    if restored.checkpoint is not None:
        engine.restore(restored.checkpoint, restored.active)
    resume = restored.checkpoint.after if restored.checkpoint else None
    report = RunReport(resumed_from=resume)
    for candle in history or ():
        engine.warm(candle)
        report.warmed += 1
    batch = Batch()
    started = timer()
    async for candle in candles:
        if resume is not None and sort_key(candle) <= resume:
            engine.warm(candle)
            report.warmed += 1
            continue
        result = engine.on_candle(candle)
        batch.add(result)
        if on_result is not None:
            on_result(result)
        report.processed += 1
        if batch.candles >= flush_every:
            batch.checkpoint = engine.checkpoint()
            await store.save(bot_id, batch)
            batch = Batch()
    batch.checkpoint = engine.checkpoint()
    await store.save(bot_id, batch)
    report.elapsed_s = timer() - started
    return report
