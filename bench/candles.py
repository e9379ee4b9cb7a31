"""Candle persistence benchmarks: `python -m bench.candles`.

1. One closed-candle batch (200 symbols, one interval, one open time) into a table already holding a
   month of 15m history for those symbols: CandleStore.upsert, median over >= 50 batches, against the
   naive pattern (per row: SELECT through the ORM, UPDATE or INSERT, commit) on the same values.
2. A backfill of 1,000,000 candles: CandleStore.bulk_load (COPY) against the chunked multi-row
   `INSERT ... ON CONFLICT DO UPDATE` path (3,640 rows per statement, compiled once per size).

Prices are real (the Binance BTC/ETH/SOL/XRP 15m files), tiled over 200 synthetic symbol names.
PostgreSQL is a throwaway durable cluster (fsync on), or the server in PD_TEST_PG_URL if set (then in
a database of its own, dropped afterwards). `run()` returns the rows for a later `python -m bench`.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import BINANCE
from bench.pg import migrated_database
from core.market.candle import INTERVAL_MS, Candle, ms_to_dt
from core.market.series import FIELDS, CandleSeries
from storage.candle_files import read_candle_file
from storage.candle_store import COLUMNS, ROWS_PER_STATEMENT, CandleStore, rows_from_series, upsert_statement
from storage.db import create_engine, session_factory
from storage.models import Candle as CandleRow

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [BINANCE / f"{b}-USDT_15m_binance.csv"
           for b in ("BTC", "ETH", "SOL", "XRP")]
SYMBOLS = 200
INTERVAL = "15"
STEP = INTERVAL_MS[INTERVAL]
HISTORY = 3_000  # candles per symbol already stored (~31 days of 15m): 600,000 rows
BATCHES = 60  # measured store batches (after WARMUP)
WARMUP = 3
NAIVE_BATCHES = 10  # the naive path commits 200 times per batch: fewer batches, same values
BACKFILL = 1_000_000
START_MS = 1_700_000_100_000 // STEP * STEP

EXTRAS: dict[str, Any] = {}  # figures of the last run() that are not rows (printed by main)


class Prices:
    """Real price rows tiled over synthetic symbols: symbol i, candle k -> row (shift_i + k) of source i % 4."""

    def __init__(self) -> None:
        self.sources = [read_candle_file(p)[0] for p in SOURCES]
        self.symbols = [f"B{i:03d}USDT" for i in range(SYMBOLS)]

    def series(self, i: int, first: int, n: int, start_ms: int = START_MS) -> CandleSeries:
        src = self.sources[i % len(self.sources)]
        idx = (i * 97 + first + np.arange(n)) % len(src)
        ms = start_ms + (first + np.arange(n, dtype=np.int64)) * STEP
        return CandleSeries(self.symbols[i], INTERVAL, ms, *(getattr(src, f)[idx] for f in FIELDS),
                            turnover=None)

    def batch(self, k: int, at_ms: int) -> list[Candle]:
        """The closed candle of every symbol at one open time (what the live feed hands over at a close)."""
        out = []
        for i in range(SYMBOLS):
            src = self.sources[i % len(self.sources)]
            j = (i * 97 + HISTORY + k) % len(src)
            out.append(Candle(self.symbols[i], INTERVAL, ms_to_dt(at_ms), float(src.open[j]), float(src.high[j]),
                              float(src.low[j]), float(src.close[j]), float(src.volume[j])))
        return out


# -- the naive pattern of the seed documents ------------------------------------------------------------


async def naive_persist(factory: Any, batch: list[Candle]) -> None:
    from decimal import Decimal

    async with factory() as session:
        for c in batch:
            row = await session.get(CandleRow, (c.symbol, c.interval, c.open_time))
            values = {f: Decimal(repr(getattr(c, f))) for f in FIELDS}
            if row is None:
                session.add(CandleRow(symbol=c.symbol, interval=c.interval, open_time=c.open_time, **values))
            else:
                for f, v in values.items():
                    setattr(row, f, v)
            await session.commit()


# -- the multi-row VALUES baseline -------------------------------------------------------------------------


class MultiRowUpsert:
    """`INSERT ... VALUES (...), (...) ... ON CONFLICT DO UPDATE`, 3,640 rows (32,760 binds) per statement.

    SQLAlchemy does not cache a multi-row VALUES compile (~0.16 ms per row), so each size is compiled once
    here and reused: the fair form of this baseline, not a strawman."""

    def __init__(self, dialect: Any) -> None:
        self.dialect = dialect
        self.compiled: dict[int, tuple[str, list[tuple[int, str]]]] = {}

    def sql(self, n: int) -> tuple[str, list[tuple[int, str]]]:
        if n not in self.compiled:
            stmt = upsert_statement(self.dialect.name, [dict.fromkeys(COLUMNS) for _ in range(n)])
            compiled = stmt.compile(dialect=self.dialect)
            order = []
            for name in compiled.positiontup or []:
                column, _, row = name.rpartition("_m")
                order.append((int(row), column))
            self.compiled[n] = (str(compiled), order)
        return self.compiled[n]

    async def load(self, engine: Any, series: list[CandleSeries]) -> None:
        async with engine.begin() as conn:
            for s in series:
                rows = rows_from_series(s, as_text=True)
                for lo in range(0, len(rows), ROWS_PER_STATEMENT):
                    chunk = rows[lo:lo + ROWS_PER_STATEMENT]
                    sql, order = self.sql(len(chunk))
                    await conn.exec_driver_sql(sql, tuple(chunk[r][c] for r, c in order))


# -- measurements ------------------------------------------------------------------------------------------


async def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    await fn()
    return time.perf_counter() - t


async def _measure(url: str) -> list[dict[str, Any]]:
    prices = Prices()
    engine = create_engine(url)
    store = CandleStore(engine)
    try:
        async with engine.connect() as conn:
            fsync = (await conn.exec_driver_sql("SHOW fsync")).scalar()
            version = (await conn.exec_driver_sql("SHOW server_version")).scalar()

        # 1. per-close batches into a table holding history
        await store.bulk_load([prices.series(i, 0, HISTORY) for i in range(SYMBOLS)])
        await _analyze(engine)
        end_ms = START_MS + HISTORY * STEP
        store_times = []
        for k in range(WARMUP + BATCHES):
            batch = prices.batch(k, end_ms + k * STEP)
            took = await _timed(lambda b=batch: store.upsert(b))
            if k >= WARMUP:
                store_times.append(took)
        naive_times = []
        factory = session_factory(engine)
        for k in range(NAIVE_BATCHES):  # the same values as the store's first batches, at fresh open times
            batch = prices.batch(WARMUP + k, end_ms + (WARMUP + BATCHES + k) * STEP)
            naive_times.append(await _timed(lambda b=batch: naive_persist(factory, b)))
        assert await store.count() == SYMBOLS * (HISTORY + WARMUP + BATCHES + NAIVE_BATCHES)
        store_ms, naive_ms = statistics.median(store_times) * 1000, statistics.median(naive_times) * 1000
        p95 = float(np.percentile(store_times, 95)) * 1000

        # 2. backfills of 1,000,000 candles into an empty table
        per_symbol = BACKFILL // SYMBOLS
        backfill = [prices.series(i, 0, per_symbol, START_MS - 1_000_000 * STEP) for i in range(SYMBOLS)]
        baseline = MultiRowUpsert(engine.dialect)

        async def fresh() -> None:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("TRUNCATE candles")
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("CHECKPOINT")  # each run starts with the same WAL state

        await fresh()
        copy_s = await _timed(lambda: store.bulk_load(backfill))
        merge_s = await _timed(lambda: store.bulk_load(backfill))  # the same again: every row conflicts
        await fresh()
        multirow_s = await _timed(lambda: baseline.load(engine, backfill))
        await fresh()
        executemany_s = await _timed(lambda: store.upsert(backfill))
        assert await store.count() == BACKFILL
        rate = {name: BACKFILL / s for name, s in
                (("copy", copy_s), ("merge", merge_s), ("multirow", multirow_s), ("executemany", executemany_s))}
    finally:
        await engine.dispose()

    EXTRAS.update({"server": f"PostgreSQL {version}, fsync={fsync}", "p95_ms": p95,
                   "executemany_rate": rate["executemany"], "multirow_rate": rate["multirow"]})
    return [
        _row(f"candles: persist one 200-symbol batch (median of {BATCHES}; naive: median of {NAIVE_BATCHES})",
             store_ms, "ms", naive_ms, naive_ms / store_ms, "< 10 ms and >= 30x the naive ORM path",
             store_ms < 10 and naive_ms / store_ms >= 30),
        _row("candles: bulk_load 1M, new range (COPY; baseline multi-row INSERT ON CONFLICT)", rate["copy"],
             "candles/s", rate["multirow"], rate["copy"] / rate["multirow"], ">= 200,000 candles/s",
             rate["copy"] >= 200_000),
        _row("candles: bulk_load 1M over stored rows (COPY + merge; same baseline)", rate["merge"], "candles/s",
             rate["multirow"], rate["merge"] / rate["multirow"], ">= 2x the multi-row baseline",
             rate["merge"] >= 2 * rate["multirow"]),
    ]


async def _analyze(engine: Any) -> None:
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM ANALYZE candles")


def _row(name: str, figure: float, unit: str, baseline: float, ratio: float, goal: str,
         met: bool) -> dict[str, Any]:
    return {"name": name, "figure": figure, "unit": unit, "baseline": baseline, "ratio": ratio, "goal": goal,
            "met": met}


def run() -> list[dict[str, Any]]:
    """Start (or borrow) PostgreSQL, migrate a fresh database, measure; rows as in the module docstring."""
    with migrated_database("bench_candles") as url:
        return asyncio.run(_measure(url))


def main() -> int:
    import logging

    from bench.table import print_rows

    logging.getLogger("alembic").setLevel(logging.WARNING)
    rows = run()
    print_rows(rows, title="candle persistence")
    print(f"{EXTRAS['server']}; batch p95 {EXTRAS['p95_ms']:.2f} ms; upsert() executemany of 1M: "
          f"{EXTRAS['executemany_rate']:,.0f} candles/s (multi-row VALUES: {EXTRAS['multirow_rate']:,.0f})")
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
