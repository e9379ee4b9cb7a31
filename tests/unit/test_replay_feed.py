"""ReplayFeed over the real shared candles: every row once, in time order, gaps reported not filled."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from core.market.candle import INTERVAL_MS, Candle, dt_to_ms, ms_to_dt
from core.market.replay import ReplayFeed, sort_key
from core.market.series import FIELDS, CandleSeries, Rows
from storage.candle_files import read_candle_dir
from tests.conftest import CANDLES

BINANCE = CANDLES / "binance_spot_2020-12_2021-07"


@pytest.fixture(scope="module")
def binance() -> list[CandleSeries]:
    return read_candle_dir(BINANCE)


def test_every_row_once_in_time_order(binance: list[CandleSeries]) -> None:
    feed = ReplayFeed(binance)
    total = sum(len(s) for s in binance)
    assert len(binance) == 12 and total == 372_552  # the row counts in the data README
    seen: dict[tuple[str, str], list[int]] = {}
    last_key = (0, 0, "")
    count = 0
    for c in feed.candles():
        key = sort_key(c)
        assert key > last_key  # strictly increasing: time order, no duplicates
        last_key = key
        seen.setdefault((c.symbol, c.interval), []).append(c.open_ms)
        count += 1
    assert count == total == len(feed)
    for s in binance:
        assert seen[(s.symbol, s.interval)] == s.open_ms.tolist()  # each file's rows, all of them, once


def test_higher_timeframe_after_the_candles_it_contains(binance: list[CandleSeries]) -> None:
    feed = ReplayFeed([s for s in binance if s.symbol == "BTCUSDT"])
    order = [(c.interval, c.open_ms) for c, _ in zip(feed.candles(), range(40), strict=False)]
    # first hour: 5m candles 00:00..00:10 come before the 15m 00:00 candle, which comes before 5m 00:15
    i15 = order.index(("15", dt_to_ms(datetime(2020, 12, 1, tzinfo=UTC))))
    assert order[i15 - 1] == ("5", dt_to_ms(datetime(2020, 12, 1, 0, 10, tzinfo=UTC)))
    assert order[i15 + 1] == ("5", dt_to_ms(datetime(2020, 12, 1, 0, 15, tzinfo=UTC)))
    i60 = order.index(("60", dt_to_ms(datetime(2020, 12, 1, tzinfo=UTC))))
    assert order[i60 - 1] == ("15", dt_to_ms(datetime(2020, 12, 1, 0, 45, tzinfo=UTC)))


def test_reports_the_six_known_gaps(binance: list[CandleSeries]) -> None:
    feed = ReplayFeed(binance)
    by_series: dict[tuple[str, str], int] = {}
    for gap in feed.gaps:
        by_series[(gap.symbol, gap.interval)] = by_series.get((gap.symbol, gap.interval), 0) + 1
        assert gap.missing > 0
    assert set(by_series.values()) == {6} and len(by_series) == 12
    five = [g for g in feed.gaps if g.symbol == "BTCUSDT" and g.interval == "5"]
    assert sum(g.missing for g in five) == 177  # the README's count of missing 5m candles
    assert max(g.first_after_ms - g.last_before_ms for g in five) == 285 * 60_000  # the longest, in minutes


def test_window_history_and_resume(binance: list[CandleSeries]) -> None:
    btc = [s for s in binance if s.symbol == "BTCUSDT" and s.interval == "15"]
    start = dt_to_ms(datetime(2021, 5, 1, tzinfo=UTC))
    feed = ReplayFeed(btc, start_ms=start, end_ms=start + 10 * INTERVAL_MS["15"])
    got = list(feed.candles())
    assert [c.open_ms for c in got] == [start + i * INTERVAL_MS["15"] for i in range(10)]

    async def history() -> list[Candle]:
        return await feed.history("BTCUSDT", "15", 5)

    import asyncio

    hist = asyncio.run(history())
    assert [c.open_ms for c in hist] == [start - (5 - i) * INTERVAL_MS["15"] for i in range(5)]

    resumed = ReplayFeed(btc, start_ms=start, end_ms=start + 10 * INTERVAL_MS["15"], after=sort_key(got[3]))
    assert list(resumed.candles()) == got[4:]


async def test_stream_matches_candles(binance: list[CandleSeries]) -> None:
    series = [s.window(None, int(s.open_ms[0]) + 3 * INTERVAL_MS["D"]) for s in binance]
    feed = ReplayFeed(series)
    streamed = [c async for c in feed.stream()]
    assert streamed == list(feed.candles())


def test_series_from_candles_round_trip() -> None:
    base = dt_to_ms(datetime(2024, 1, 1, tzinfo=UTC))
    s = CandleSeries("XUSDT", "15", np.array([base, base + 900_000]), *(np.array([1.0, 2.0]) for _ in range(5)))
    again = CandleSeries.from_candles("XUSDT", "15", list(s.candles()))
    assert list(again.candles()) == list(s.candles())
    assert Path(BINANCE).exists()


def test_candles_carry_each_rows_values_across_conversion_blocks(binance: list[CandleSeries]) -> None:
    """The feed converts each series a block of rows at a time (core.market.series.Rows): every candle still
    carries its own row's values, at block edges too, and equals the one built from that row alone."""
    btc = [s.window(None, int(s.open_ms[0]) + 2 * Rows.BLOCK * INTERVAL_MS["15"]) for s in binance
           if s.symbol == "BTCUSDT" and s.interval in ("5", "15")]
    got: dict[str, list[Candle]] = {}
    for c in ReplayFeed(btc).candles():
        got.setdefault(c.interval, []).append(c)
    for s in btc:
        candles = got[s.interval]
        assert len(candles) == len(s) > Rows.BLOCK
        for field in ("open", "high", "low", "close", "volume"):
            assert [getattr(c, field) for c in candles] == getattr(s, field).tolist()
        for i in (0, Rows.BLOCK - 1, Rows.BLOCK, Rows.BLOCK + 1, len(s) - 1):
            assert candles[i] == s.candle(i) == Candle(s.symbol, s.interval, ms_to_dt(int(s.open_ms[i])),
                                                       *(float(getattr(s, f)[i]) for f in FIELDS))
            assert candles[i].open_ms == int(s.open_ms[i])
