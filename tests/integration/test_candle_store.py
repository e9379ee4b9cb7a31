"""CandleStore against real SQLite and PostgreSQL: exact round trips, upsert semantics, the COPY path,
warm-up loads, retention, gaps and the /db_stats figures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from core.market.candle import INTERVAL_MS, Candle, ms_to_dt
from core.market.series import FIELDS, CandleSeries
from storage import migrations
from storage.candle_files import read_candle_file
from storage.candle_store import CandleStore
from storage.db import create_engine
from tests.conftest import CANDLES

BYBIT_BTC = CANDLES / "bybit_perp_2026-02" / "BTC-USDT_15m_bybit.csv"
BINANCE = CANDLES / "binance_spot_2020-12_2021-07"
T0 = 1_770_539_400_000  # 2026-02-08 08:30 UTC, aligned to every interval up to 30m


@pytest.fixture
def migrated(db_url: str) -> str:
    migrations.upgrade(db_url)
    return db_url


@pytest.fixture
async def store(migrated: str) -> AsyncIterator[CandleStore]:
    engine = create_engine(migrated, null_pool=True)
    try:
        yield CandleStore(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[CandleStore]:
    await asyncio.to_thread(migrations.upgrade, pg_url)  # alembic runs its own event loop
    engine = create_engine(pg_url, null_pool=True)
    try:
        yield CandleStore(engine)
    finally:
        await engine.dispose()


def real(path: Path = BYBIT_BTC) -> CandleSeries:
    return read_candle_file(path)[0]


def make_series(symbol: str, interval: str, n: int, start_ms: int = T0, *, turnover: bool = True,
                shift: int = 0) -> CandleSeries:
    """n candles with real BTC prices (tiled), `interval` apart."""
    src = real()
    idx = (np.arange(n) + shift) % len(src)
    ms = start_ms + np.arange(n, dtype=np.int64) * INTERVAL_MS[interval]
    return CandleSeries(symbol, interval, ms, *(getattr(src, f)[idx] for f in FIELDS),
                        turnover=src.close[idx] * src.volume[idx] if turnover else None)


def assert_same(a: CandleSeries, b: CandleSeries) -> None:
    assert (a.symbol, a.interval) == (b.symbol, b.interval)
    np.testing.assert_array_equal(a.open_ms, b.open_ms)
    for f in FIELDS:  # exact: equal floats, not approximately equal
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    if a.turnover is None or b.turnover is None:
        assert a.turnover is None and b.turnover is None
    else:
        assert np.array_equal(a.turnover, b.turnover)


# awkward but legitimate floats: many significant digits, tiny prices, large volumes (<= 10 decimals)
AWKWARD = [
    (0.0000012345, 0.0000012399, 0.0000012001, 0.0000012388, 98765432109.87654, 1e-10),
    (123456.1234567891, 123456.2234567891, 123456.0234567891, 123456.1, 0.3, 7.000000001),
    (70159.1, 70766.5, 70021.3, 70320.0, 2800.256, 196991231.20561),
]


def awkward_candles(symbol: str = "AWKUSDT") -> list[Candle]:
    return [Candle(symbol, "15", ms_to_dt(T0 + i * 900_000), o, h, lo, c, v, t)
            for i, (o, h, lo, c, v, t) in enumerate(AWKWARD)]


# -- round trips -----------------------------------------------------------------------------------------------


async def test_round_trip_is_exact_on_every_path(store: CandleStore) -> None:
    src = real()  # 668 real Bybit candles, no turnover column
    assert await store.upsert(src) == len(src)
    assert_same(await store.series("BTCUSDT", "15"), src)

    other = replace(src, symbol="BTCCOPY")
    assert await store.bulk_load(other) == len(src)
    assert_same(await store.series("BTCCOPY", "15"), other)

    with_turnover = make_series("TURNUSDT", "3", 500)
    await store.bulk_load(with_turnover)
    assert_same(await store.series("TURNUSDT", "3"), with_turnover)

    candles = awkward_candles()
    await store.upsert(candles)
    assert await store.history("AWKUSDT", "15", 10) == candles
    await store.bulk_load(CandleSeries.from_candles("AWKCOPY", "15", [replace(c, symbol="AWKCOPY") for c in candles]))
    assert [replace(c, symbol="AWKUSDT") for c in await store.history("AWKCOPY", "15", 10)] == candles


async def test_postgres_stores_the_printed_decimal_not_the_binary_expansion(pg_store: CandleStore) -> None:
    await pg_store.upsert(awkward_candles("UPS"))
    await pg_store.bulk_load(CandleSeries.from_candles("BLK", "15", [replace(c, symbol="BLK")
                                                                     for c in awkward_candles()]))
    async with pg_store.engine.connect() as conn:
        for symbol in ("UPS", "BLK"):
            rows = (await conn.execute(text(
                "SELECT open::text, volume::text, turnover::text FROM candles WHERE symbol = :s ORDER BY open_time"),
                {"s": symbol})).all()
            assert rows[2] == ("70159.1000000000", "2800.2560000000", "196991231.2056100000"), symbol
            assert rows[0][1] == "98765432109.8765400000"


# -- upsert semantics --------------------------------------------------------------------------------------------


async def test_upsert_twice_keeps_one_row_and_changed_values_update(store: CandleStore) -> None:
    batch = [make_series(f"S{i}USDT", "15", 1, T0 + 5 * 900_000).candle(0) for i in range(50)]
    await store.upsert(batch)
    await store.upsert(batch)
    assert await store.count() == 50

    changed = [replace(c, close=c.close + 1.5, high=c.high + 2.0, turnover=None) for c in batch[:10]]
    await store.upsert(changed)
    assert await store.count() == 50
    got = await store.history("S3USDT", "15", 1)
    assert got[0].close == batch[3].close + 1.5 and got[0].high == batch[3].high + 2.0
    assert got[0].turnover == batch[3].turnover  # a missing turnover never erases a known one
    assert (await store.history("S20USDT", "15", 1))[0] == batch[20]


async def test_duplicates_inside_one_batch_last_wins(store: CandleStore) -> None:
    c = make_series("DUPUSDT", "15", 1).candle(0)
    await store.upsert([c, replace(c, close=c.close + 1), replace(c, close=c.close + 2)])
    assert await store.history("DUPUSDT", "15", 5) == [replace(c, close=c.close + 2)]
    s = make_series("DUPUSDT", "3", 3)
    doubled = CandleSeries(s.symbol, s.interval, np.concatenate([s.open_ms, s.open_ms[:1]]),
                           *(np.concatenate([getattr(s, f), getattr(s, f)[:1] + 7]) for f in FIELDS))
    await store.bulk_load(doubled)
    got = await store.series("DUPUSDT", "3")
    assert len(got) == 3 and got.close[0] == s.close[0] + 7


async def test_bad_input_writes_nothing(store: CandleStore) -> None:
    s = make_series("BADUSDT", "15", 10)
    s.close[7] = np.nan
    for write in (store.upsert, store.bulk_load):
        with pytest.raises(ValueError, match="NaN"):
            await write(s)
    with pytest.raises(ValueError, match="NaN"):
        await store.upsert([make_series("OKUSDT", "15", 1).candle(0), s.candle(7)])
    with pytest.raises(ValueError, match="interval"):
        await store.upsert([replace(s.candle(0), interval="7")])
    assert await store.count() == 0


async def test_upsert_above_the_bind_parameter_limit(pg_store: CandleStore) -> None:
    # 20,000 candles x 9 columns = 180,000 values in one call: far past asyncpg's 32,767 per statement
    parts = [make_series(f"P{i}USDT", "15", 2_000, shift=i) for i in range(10)]
    assert await pg_store.upsert(parts) == 20_000
    assert await pg_store.count() == 20_000
    for p in parts[::3]:
        assert_same(await pg_store.series(p.symbol, "15"), p)
    candles = [c for p in parts for c in p.candles()]
    assert await pg_store.upsert(candles) == 20_000  # the Candle-list path, all conflicts
    assert await pg_store.count() == 20_000


# -- bulk_load ---------------------------------------------------------------------------------------------------


async def test_bulk_load_equals_upsert(store: CandleStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="storage.candle_store")
    a = make_series("AUSDT", "15", 3_000)
    b = replace(a, symbol="BUSDT")
    await store.bulk_load(a)
    await store.upsert(b)
    assert_same(replace(await store.series("AUSDT", "15"), symbol="BUSDT"), await store.series("BUSDT", "15"))

    # overlapping reload with some values changed and new candles appended: the merge path
    later = make_series("AUSDT", "15", 1_000, T0 + 2_500 * 900_000, shift=7)
    later_b = replace(later, symbol="BUSDT")
    caplog.clear()
    await store.bulk_load(later)
    await store.upsert(later_b)
    if store.dialect == "postgresql":
        assert "merged through a temp table" in caplog.text
    got_a, got_b = await store.series("AUSDT", "15"), await store.series("BUSDT", "15")
    assert len(got_a) == 3_500
    assert_same(replace(got_a, symbol="BUSDT"), got_b)
    assert_same(got_a.window(T0 + 2_500 * 900_000), later)
    assert_same(got_a.window(None, T0 + 2_500 * 900_000), a.take(slice(0, 2_500)))


async def test_bulk_load_falls_back_to_merge_when_direct_copy_collides(
        pg_store: CandleStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="storage.candle_store")
    s = make_series("RACEUSDT", "15", 500)
    await pg_store.upsert(replace(s.take(slice(200, 210)), close=s.close[200:210] + 1))  # a concurrent writer's

    async def nothing_stored(*_args: object) -> bool:  # the range check saw nothing (the race)
        return False

    monkeypatch.setattr(pg_store, "_overlapping", nothing_stored)
    await pg_store.bulk_load(s)
    assert "collided with the direct COPY" in caplog.text
    assert_same(await pg_store.series("RACEUSDT", "15"), s)


async def test_bulk_load_of_real_files_and_progress(store: CandleStore) -> None:
    files = [BINANCE / "XRP-USDT_1h_binance.csv", BINANCE / "ETH-USDT_15m_binance.csv", BYBIT_BTC]
    series = [real(p) for p in files]
    done: list[int] = []
    assert await store.bulk_load(series, progress=done.append) == sum(map(len, series))
    assert sum(done) == sum(map(len, series))
    for s in series:
        assert_same(await store.series(s.symbol, s.interval), s)


# -- reads -------------------------------------------------------------------------------------------------------


async def test_load_latest_oldest_first_and_last_open_time(store: CandleStore) -> None:
    assert len(await store.load("NONE", "15", 10)) == 0
    assert await store.last_open_time("NONE", "15") is None
    s = make_series("LUSDT", "15", 300)
    await store.upsert(s)
    await store.upsert(make_series("LUSDT", "3", 50, T0 + 10**9))  # other interval, newer: not mixed in
    latest = await store.load("LUSDT", "15", 120)
    assert_same(latest, s.take(slice(180, 300)))
    assert bool(np.all(np.diff(latest.open_ms) > 0))
    assert_same(await store.load("LUSDT", "15", 10_000), s)
    history = await store.history("LUSDT", "15", 3)
    assert history == list(s.take(slice(297, 300)).candles())
    assert await store.last_open_time("LUSDT", "15") == ms_to_dt(int(s.open_ms[-1]))


async def test_series_window(store: CandleStore) -> None:
    s = make_series("WUSDT", "15", 100)
    await store.upsert(s)
    start, end = ms_to_dt(int(s.open_ms[10])), ms_to_dt(int(s.open_ms[20]))
    assert_same(await store.series("WUSDT", "15", start, end), s.take(slice(10, 20)))
    assert_same(await store.series("WUSDT", "15", start), s.take(slice(10, 100)))
    assert await store.keys() == [("WUSDT", "15")]


# -- retention, gaps, stats --------------------------------------------------------------------------------------


async def test_retention_deletes_only_old_rows_of_the_right_interval(store: CandleStore) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    day = 86_400_000
    start = int((now - timedelta(days=400)).timestamp() * 1000)
    for interval in ("3", "15", "60"):  # one candle a day for 400 days, for each interval
        s = make_series("RUSDT", interval, 400, start)
        s = replace(s, open_ms=start + np.arange(400, dtype=np.int64) * day)
        await store.upsert(s)
    deleted = await store.apply_retention(now)
    assert deleted == {"3": 370, "15": 220}  # days 0..369 are older than 30 days; 0..219 older than 180
    assert await store.count(interval="3") == 30 and await store.count(interval="15") == 180
    assert await store.count(interval="60") == 400
    oldest = (await store.series("RUSDT", "3")).open_ms[0]
    assert ms_to_dt(int(oldest)) >= now - timedelta(days=30)
    assert await store.apply_retention(now, {"60": timedelta(days=100)}) == {"60": 300}
    assert await store.apply_retention(now) == {"3": 0, "15": 0}
    with pytest.raises(ValueError):
        await store.apply_retention(now.replace(tzinfo=None))


async def test_gap_report(store: CandleStore) -> None:
    s = make_series("GUSDT", "15", 200)
    keep = np.ones(200, dtype=bool)
    keep[[50, 51, 52, 120]] = False  # two holes: 3 candles and 1 candle
    holed = s.take(keep)
    await store.upsert(holed)
    await store.upsert(make_series("GUSDT", "3", 100))  # complete
    gaps = await store.gaps()
    assert gaps == holed.gaps()
    assert [g.missing for g in gaps] == [3, 1]
    assert gaps[0].last_before_ms == s.open_ms[49] and gaps[0].first_after_ms == s.open_ms[53]
    assert await store.gaps("GUSDT", "3") == []

    xrp = real(BINANCE / "XRP-USDT_1h_binance.csv")  # 6 real exchange outages
    await store.bulk_load(xrp)
    assert await store.gaps("XRPUSDT", "60") == xrp.gaps() and len(xrp.gaps()) == 6


async def test_db_stats(store: CandleStore) -> None:
    empty = await store.stats()
    assert (empty.symbols, empty.candles, empty.intervals, empty.gaps) == (0, 0, [], 0)

    a = make_series("AUSDT", "15", 100)
    await store.upsert(a.take(np.r_[0:40, 45:100]))  # one gap of 5
    await store.upsert(make_series("BUSDT", "15", 30, T0 - 30 * 900_000))
    await store.upsert(make_series("AUSDT", "3", 7, T0 + 10 * 180_000))
    stats = await store.stats()
    assert stats.backend == store.dialect
    assert stats.symbols == 2 and stats.candles == 95 + 30 + 7
    by = {i.interval: i for i in stats.intervals}
    assert set(by) == {"3", "15"}
    assert (by["15"].symbols, by["15"].candles) == (2, 125)
    assert by["15"].oldest == ms_to_dt(T0 - 30 * 900_000) and by["15"].newest == ms_to_dt(T0 + 99 * 900_000)
    assert (by["3"].symbols, by["3"].candles, by["3"].oldest) == (1, 7, ms_to_dt(T0 + 10 * 180_000))
    assert (stats.gaps, stats.missing_candles) == (1, 5)
    assert stats.database_bytes > 0
    assert stats.table_bytes is not None and 0 < stats.table_bytes <= stats.database_bytes
    if store.dialect == "sqlite":
        assert stats.file_bytes is not None and stats.file_bytes > 0


# -- stored candles that are not sane ----------------------------------------------------------------------------


async def test_stored_absurd_candles_do_not_stop_a_warm_up(store: CandleStore,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """An older version stored what the feed now refuses (its writes only refused NaN): after a restart the
    warm-up skips those candles, counts them, says so once, and the bot warms and trades on the rest."""
    from core.config import BotConfig
    from core.engine import Engine
    from core.market.sanity import Refusal

    caplog.set_level(logging.WARNING, logger="storage.candle_store")
    s = make_series("BTCUSDT", "15", 300)
    now = ms_to_dt(int(s.open_ms[-1])) + timedelta(minutes=20)  # the last one closed 5 minutes ago
    candles = list(s.candles())
    huge = 1e160 if store.dialect == "sqlite" else 5e17  # PostgreSQL's Numeric(28,10) cannot hold 1e160 at all
    candles[100] = replace(candles[100], volume=huge)
    candles[200] = replace(candles[200], high=candles[200].low - 1)
    future = replace(candles[-1], open_time=now + timedelta(days=7))  # "confirmed" a week early
    await store.upsert([*candles, future])
    assert await store.count("BTCUSDT", "15") == 301

    warm = CandleStore(store.engine, clock=lambda: now)
    history = await warm.history("BTCUSDT", "15", 400)
    assert history == [c for i, c in enumerate(candles) if i not in (100, 200)]
    assert warm.refused == {Refusal.VOLUME_TOO_LARGE: 1, Refusal.HIGH_BELOW_LOW: 1, Refusal.NOT_CLOSED: 1}
    [line] = [r.getMessage() for r in caplog.records]
    assert "skipped 3 unusable stored candle(s) of BTCUSDT 15" in line and "volume_too_large: 1" in line

    engine = Engine(BotConfig(id="w", symbols=["BTCUSDT"], slow_interval="15", fast_interval="5"))
    for c in history:
        engine.warm(c)
    nxt = replace(candles[-1], open_time=candles[-1].open_time + timedelta(minutes=15))
    engine.on_candle(nxt)  # the real next candle is new to the engine, not a "duplicate" of the future one
    assert engine.counters["candles"] == 1 and engine.counters["duplicates"] == 0

    # the other reads skip the absurd values too (charts, export); a future candle is theirs to show
    assert len(await store.series("BTCUSDT", "15")) == 299
    assert len(await store.load("BTCUSDT", "15", 1000, now=now)) == 298
