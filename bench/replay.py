"""Replay throughput (indicators + strategies + phantom book) and the phantom book's hot loop.

    python -m bench.replay

Figures, each against a baseline measured in the same run on the same data:
- engine candles/s on the shared real candles (4 symbols, 15m + 5m), one core, vs the seed systems'
  pattern: recompute every indicator with pandas over the whole frame (the last 1000 candles) at every
  closed candle, then run the same strategies;
- microseconds to apply one candle to 1,000 active phantoms of one symbol.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bench.data import BINANCE
from bench.table import print_rows
from core.config import BotConfig
from core.engine import Engine
from core.market.candle import Candle
from core.market.replay import ReplayFeed
from core.market.vectorized import indicators_frame
from core.phantom import PhantomBook
from core.signal import Signal
from storage.candle_files import read_candle_dir

DATA = BINANCE
BASELINE_CANDLES = 3000  # the pandas baseline is slow: measure it on the first candles only
FRAME = 1000


def _engine_rate(candles: list[Candle]) -> float:
    engine = Engine(BotConfig(id="bench", symbols=sorted({c.symbol for c in candles})))
    started = time.perf_counter()
    for candle in candles:
        engine.on_candle(candle)
    return len(candles) / (time.perf_counter() - started)


def _pandas_rate(candles: list[Candle]) -> float:
    """The seed pattern: keep a DataFrame per series, recompute all indicators over it at each candle."""
    import pandas as pd

    engine = Engine(BotConfig(id="bench", symbols=sorted({c.symbol for c in candles})))
    frames: dict[tuple[str, str], list[Candle]] = {}
    started = time.perf_counter()
    for candle in candles:
        frame = frames.setdefault((candle.symbol, candle.interval), [])
        frame.append(candle)
        del frame[:-FRAME]
        df = pd.DataFrame({"high": [c.high for c in frame], "low": [c.low for c in frame],
                           "close": [c.close for c in frame], "volume": [c.volume for c in frame]})
        indicators_frame(df["high"].to_numpy(), df["low"].to_numpy(), df["close"].to_numpy(),
                         df["volume"].to_numpy())
        engine.on_candle(candle)  # the same strategies and phantom book on top
    return len(candles) / (time.perf_counter() - started)


def _phantom_update_us(n: int = 1000, rounds: int = 300) -> tuple[float, float]:
    """Median µs for one candle over n active phantoms: (none closes, all close)."""
    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def book_with(count: int) -> PhantomBook:
        book = PhantomBook(timeout_candles=10_000_000)
        for i in range(count):
            entry = Decimal(100) + Decimal(i % 50) / 100
            book.record(Signal(f"p{i}", "b", "XUSDT", "15", "scalp", "long" if i % 2 else "short", entry,
                               entry - 2 if i % 2 else entry + 2, entry + 4 if i % 2 else entry - 4, t0), "EXECUTED")
        return book

    book = book_with(n)
    quiet = []
    for k in range(rounds):
        candle = Candle("XUSDT", "15", t0 + timedelta(minutes=15 * k), 100.2, 100.9, 99.6, 100.3, 1.0)
        started = time.perf_counter()
        book.on_candle(candle)
        quiet.append(time.perf_counter() - started)
    closing = []
    for k in range(30):
        book = book_with(n)
        candle = Candle("XUSDT", "15", t0 + timedelta(minutes=15 * k), 100.2, 110, 90, 100.3, 1.0)
        started = time.perf_counter()
        book.on_candle(candle)
        closing.append(time.perf_counter() - started)
    return statistics.median(quiet) * 1e6, statistics.median(closing) * 1e6


def run() -> list[dict[str, Any]]:
    series = read_candle_dir(DATA, intervals=["15", "5"])
    candles = list(ReplayFeed(series).candles())
    engine = max(_engine_rate(candles) for _ in range(2))
    baseline = _pandas_rate(candles[:BASELINE_CANDLES])
    quiet_us, closing_us = _phantom_update_us()
    return [
        {"name": "replay: indicators + strategies + phantoms", "figure": engine, "unit": "candles/s",
         "baseline": baseline, "ratio": engine / baseline, "goal": ">= 50,000 candles/s and >= 20x pandas recompute",
         "met": engine >= 50_000 and engine / baseline >= 20},
        {"name": "1,000 active phantoms, one candle (none close)", "figure": quiet_us, "unit": "µs",
         "baseline": closing_us, "ratio": closing_us / quiet_us, "goal": "< 1000 µs (baseline: all 1,000 close)",
         "met": quiet_us < 1000},
    ]


if __name__ == "__main__":
    print_rows(run())
