"""Durable trade records: `python -m bench.ledger`.

1. Recording a trade close on local PostgreSQL (fsync on): SqlLedger.record of the close event (trade,
   orders and the stats cache in one transaction) with 5,000 closed trades already in the table; median
   and p99 over 300 closes. Baseline, same data: the seed systems' pattern — read the trade through the
   ORM, modify it, recompute the statistics from every closed trade of the bot, commit.
2. The journal fallback (the database is down): Journal.append (one line, fsynced), median over 300;
   its baseline is the database record above.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.pg import migrated_database
from core.config import BotConfig
from core.ledger import LedgerEvent, OrderRecord, TradeRecord
from core.stats import facts_of, summarize
from storage.bots import upsert_bot
from storage.db import create_engine, dialect_insert, session_factory
from storage.journal import Journal
from storage.ledger import SqlLedger, trade_row
from storage.models import Trade

PRELOADED = 5_000
MEASURED = 300
NAIVE = 40
T0 = datetime(2024, 1, 1, tzinfo=UTC)
CONFIG = BotConfig(id="bench", symbols=["BTCUSDT"])


def _trade(i: int, closed: bool) -> TradeRecord:
    entry_time = T0 + timedelta(minutes=15 * i)
    t = TradeRecord(f"t-bench-{i:08d}", "bench", None, "BTCUSDT", "trend_pullback", "long", "open", "paper",
                    Decimal("0.010"), Decimal(5), Decimal("40000.0"), entry_time, Decimal("39600.0"),
                    Decimal("40800.0"), fees=Decimal("0.22"))
    if closed:
        win = i % 3 == 0
        t.status, t.exit_time = "closed", entry_time + timedelta(hours=2)
        t.exit_price = Decimal("40800.0") if win else Decimal("39600.0")
        t.exit_reason = "tp" if win else "sl"
        t.gross_pnl = (t.exit_price - t.entry_price) * t.qty
        t.fees = Decimal("0.44")
        t.net_pnl = t.gross_pnl - t.fees
        t.realized_r = 2.0 if win else -1.0
    return t


def _close_event(i: int) -> LedgerEvent:
    t = _trade(i, closed=True)
    order = OrderRecord(f"pd-bench{i:08d}-tp", "bench", t.id, "BTCUSDT", "Sell", "TakeProfit", t.qty, "Filled",
                        t.exit_time or T0, filled_at=t.exit_time, filled_qty=t.qty, avg_price=t.exit_price,
                        fee=Decimal("0.22"), reduce_only=True)
    return LedgerEvent("close", t, [order])


async def _naive_close(factory: Any, event: LedgerEvent) -> None:
    t = event.trade
    async with factory() as session:
        row = await session.get(Trade, t.id)
        for key in ("status", "exit_price", "exit_time", "exit_reason", "gross_pnl", "net_pnl", "fees", "realized_r"):
            setattr(row, key, getattr(t, key))
        rows = (await session.scalars(select(Trade).where(Trade.bot_id == "bench", Trade.status == "closed"))).all()
        summarize([facts_of(r)
                   for r in rows], CONFIG.capital)
        await session.commit()


async def _measure(url: str) -> dict[str, float]:
    engine = create_engine(url)
    factory = session_factory(engine)
    now = datetime.now(UTC)
    try:
        async with factory.begin() as session:
            await upsert_bot(session, CONFIG)
            rows = [trade_row(_trade(i, closed=True), now) for i in range(PRELOADED)]
            await session.execute(dialect_insert(session)(Trade), rows)
            opens = [trade_row(_trade(i, closed=False), now)
                     for i in range(PRELOADED, PRELOADED + MEASURED + NAIVE)]
            await session.execute(dialect_insert(session)(Trade), opens)
        ledger = SqlLedger(engine, Journal(Path(tempfile.mkdtemp()) / "unused.jsonl"))
        durable = []
        for i in range(PRELOADED, PRELOADED + MEASURED):
            event = _close_event(i)
            started = time.perf_counter()
            assert await ledger.record(event) == "db"
            durable.append(time.perf_counter() - started)
        naive = []
        for i in range(PRELOADED + MEASURED, PRELOADED + MEASURED + NAIVE):
            started = time.perf_counter()
            await _naive_close(factory, _close_event(i))
            naive.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    journal = Journal(Path(tempfile.mkdtemp()) / "ledger.jsonl")
    appends = []
    for i in range(MEASURED):
        doc = _close_event(i).as_json()
        started = time.perf_counter()
        journal.append(doc)
        appends.append(time.perf_counter() - started)
    durable.sort()
    return {"median_ms": statistics.median(durable) * 1000, "p99_ms": durable[int(len(durable) * 0.99) - 1] * 1000,
            "naive_ms": statistics.median(naive) * 1000, "journal_ms": statistics.median(appends) * 1000}


def run() -> list[dict[str, Any]]:
    with migrated_database("bench_ledger") as url:
        m = asyncio.run(_measure(url))
    return [
        {"name": f"ledger: trade close on PostgreSQL, median (p99 {m['p99_ms']:.1f} ms)", "figure": m["median_ms"],
         "unit": "ms", "baseline": m["naive_ms"], "ratio": m["naive_ms"] / m["median_ms"],
         "goal": "median < 5 ms, p99 < 20 ms (baseline: ORM + full stats recompute)",
         "met": m["median_ms"] < 5 and m["p99_ms"] < 20},
        {"name": "ledger: journal fallback (fsynced line), median", "figure": m["journal_ms"], "unit": "ms",
         "baseline": m["median_ms"], "ratio": m["median_ms"] / m["journal_ms"],
         "goal": "median < 2 ms (baseline: the database record)", "met": m["journal_ms"] < 2},
    ]


if __name__ == "__main__":
    from bench.table import print_rows

    print_rows(run(), title="ledger")
