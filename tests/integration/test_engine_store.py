"""The engine's persistence on SQLite and PostgreSQL, with the Redis mirror: batches are atomic and
idempotent, a resumed run equals an uninterrupted one, Redis is rebuilt from the database."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from redis.asyncio import Redis

from core.config import BotConfig
from core.engine import Engine
from core.market.candle import Candle, dt_to_ms
from core.market.replay import ReplayFeed
from core.market.series import CandleSeries
from core.persistence import Batch, MemoryStore, Restored
from core.phantom import PhantomBook, phantom_digest
from core.runner import run
from jobs.desk_jobs import DeskJobs
from storage import migrations
from storage.bots import load_bot, upsert_bot
from storage.candle_files import read_candle_dir
from storage.db import create_engine, session_factory
from storage.engine_store import SqlEngineStore
from tests.conftest import CANDLES

CONFIG = BotConfig(id="it", symbols=["BTCUSDT", "ETHUSDT"], slow_interval="15", fast_interval="5")


@pytest.fixture(scope="module")
def market() -> list[CandleSeries]:
    start = dt_to_ms(datetime(2021, 2, 1, tzinfo=UTC))
    series = read_candle_dir(CANDLES / "binance_spot_2020-12_2021-07", ["BTCUSDT", "ETHUSDT"], ["15", "5"])
    return [s.window(start, start + 25 * 86_400_000) for s in series]


async def _stream(candles: list[Candle]) -> AsyncIterator[Candle]:
    for c in candles:
        yield c


async def _open(url: str, redis_url: str | None = None) -> tuple[SqlEngineStore, object, Redis | None]:
    await asyncio.to_thread(migrations.upgrade, url)
    db = create_engine(url, null_pool=True)
    redis = Redis.from_url(redis_url) if redis_url else None
    async with session_factory(db).begin() as session:
        await upsert_bot(session, CONFIG)
    return SqlEngineStore(db, redis), db, redis


async def test_resume_after_a_crash_equals_one_run(db_url: str, market: list[CandleSeries]) -> None:
    candles = list(ReplayFeed(market).candles())
    memory = MemoryStore()
    whole = Engine(CONFIG)
    await run(whole, _stream(candles), memory, flush_every=1000)
    want = phantom_digest(await memory.closed_phantoms("it"))

    store, db, _ = await _open(db_url)
    try:
        # "crash": the first process sees only part of the stream, its last partial batch is lost
        first = Engine(CONFIG)
        await run(first, _stream(candles[:7_777]), store, flush_every=1000)
        # a second process starts from the database and runs over the full stream again
        second = Engine(CONFIG)
        report = await run(second, _stream(candles), store, flush_every=1000)
        assert report.resumed_from is not None and report.warmed >= 7_000
        got = await store.closed_phantoms("it")
        assert phantom_digest(got) == want
        assert second.counters == whole.counters
        counts = await store.counts("it")
        assert counts["signals"] == whole.counters["signals"]
        assert counts["phantoms_closed"] + counts["phantoms_active"] == whole.counters["signals"]
    finally:
        await db.dispose()  # type: ignore[attr-defined]


async def test_saving_a_batch_twice_changes_nothing(db_url: str, market: list[CandleSeries]) -> None:
    store, db, _ = await _open(db_url)
    try:
        candles = list(ReplayFeed(market).candles())[:20_000]
        engine = Engine(CONFIG)
        await run(engine, _stream(candles), store, flush_every=50_000)
        before = await store.counts("it")
        digest = phantom_digest(await store.closed_phantoms("it"))
        again = Engine(CONFIG)  # replays everything after the checkpoint: nothing (all done)
        report = await run(again, _stream(candles), store, flush_every=50_000)
        assert report.processed == 0
        assert await store.counts("it") == before
        assert phantom_digest(await store.closed_phantoms("it")) == digest
        restored = await store.restore("it")
        assert len(restored.active) == before["phantoms_active"]
        for p in restored.active:  # restored phantoms carry their lifecycle state
            assert p.status == "active" and p.candles_seen >= 0 and p.risk > 0
        bot = await _load(db)
        assert bot == CONFIG
    finally:
        await db.dispose()  # type: ignore[attr-defined]


async def _load(db: object) -> BotConfig | None:
    async with session_factory(db).begin() as session:  # type: ignore[arg-type]
        return await load_bot(session, "it")


def _cut_with_active(candles: list[Candle]) -> int:
    """An index past the middle where some phantoms are still open."""
    probe = Engine(CONFIG)
    return next(i for i, c in enumerate(candles)
                if probe.on_candle(c) and i > len(candles) // 2 and probe.book.count_active())


async def test_redis_mirror_and_rebuild(pg_url: str, redis_url: str, market: list[CandleSeries]) -> None:
    store, db, redis = await _open(pg_url, redis_url)
    assert redis is not None
    try:
        candles = list(ReplayFeed(market).candles())
        cut = _cut_with_active(candles)
        engine = Engine(CONFIG)
        await run(engine, _stream(candles[:cut + 1]), store, flush_every=2_000)
        active_ids = {p.id for p in (await store.restore("it")).active}
        mirrored = {k.decode() for k in await redis.hkeys("pd:it:phantoms")}
        assert mirrored == active_ids and active_ids
        doc = json.loads((await redis.hget("pd:it:phantoms", sorted(active_ids)[0])).decode())
        assert doc["status"] == "active"
        windows = {k.decode() for k in await redis.keys("pd:it:winrate:*")}
        assert windows == {f"pd:it:winrate:{s}" for s in engine.book.win_windows}
        await redis.flushdb()  # Redis lost everything
        assert await store.rebuild_redis("it") == len(active_ids)
        assert {k.decode() for k in await redis.hkeys("pd:it:phantoms")} == active_ids
        assert await redis.llen(f"pd:it:winrate:{sorted(engine.book.win_windows)[0]}") > 0
        await _rebuild_racing_a_close(store, db, redis)
    finally:
        await redis.aclose()
        await db.dispose()  # type: ignore[attr-defined]


async def _rebuild_racing_a_close(store: SqlEngineStore, db: object, redis: Redis) -> None:
    """A rebuild that has read the active phantoms, then a save closing one of them: the closed phantom
    must not come back to Redis when the rebuild writes what it read."""
    rebuilder = SqlEngineStore(db, redis)  # type: ignore[arg-type]  # the watch job's own store
    has_read, go_on = asyncio.Event(), asyncio.Event()
    read = rebuilder.restore

    async def slow_restore(bot_id: str) -> Restored:
        restored = await read(bot_id)
        has_read.set()
        await go_on.wait()
        return restored

    rebuilder.restore = slow_restore  # type: ignore[method-assign]
    rebuilding = asyncio.create_task(rebuilder.rebuild_redis("it"))
    await has_read.wait()
    victim = copy.copy((await store.restore("it")).active[0])
    PhantomBook()._close(victim, float(victim.take_profit), victim.opened_at + timedelta(hours=1), "tp")
    saving = asyncio.create_task(store.save("it", Batch(phantoms={victim.id: victim})))
    await asyncio.sleep(0.3)  # time enough for an unguarded save to commit and mirror
    go_on.set()
    await asyncio.gather(rebuilding, saving)
    active = {p.id for p in (await store.restore("it")).active}
    assert victim.id not in active
    assert {k.decode() for k in await redis.hkeys("pd:it:phantoms")} == active


async def test_a_missed_mirror_write_is_repaired_by_the_watch_job(pg_url: str, redis_url: str,
                                                                 market: list[CandleSeries]) -> None:
    store, db, admin = await _open(pg_url, redis_url)
    assert admin is not None
    flaky = Redis.from_url(redis_url, socket_timeout=0.3)  # the desk's client, impatient
    desk_store = SqlEngineStore(db, flaky)  # type: ignore[arg-type]
    try:
        candles = list(ReplayFeed(market).candles())
        await run(Engine(CONFIG), _stream(candles[:_cut_with_active(candles) + 1]), desk_store, flush_every=2_000)
        assert desk_store.stale_bots() == set()
        victim = copy.copy((await store.restore("it")).active[0])
        PhantomBook()._close(victim, float(victim.stop_loss), victim.opened_at + timedelta(hours=1), "sl")
        await admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")  # Redis stalls past the timeout
        await desk_store.save("it", Batch(phantoms={victim.id: victim}))  # committed; the mirror times out
        assert desk_store.stale_bots() == {"it"}
        await asyncio.sleep(1.1)
        await admin.hset("pd:it:phantoms", victim.id, "{}")  # whether or not the stalled HDEL ran: it missed
        host = SimpleNamespace(db=db, redis=flaky, runtime=SimpleNamespace(bots={"it": None}),
                               notify=lambda notice: None)
        jobs = DeskJobs(host)  # type: ignore[arg-type]
        jobs.redis_was_up = True  # no outage seen: only the missed write calls for a rebuild
        await jobs.redis_watch()
        active = {p.id for p in (await store.restore("it")).active}
        assert victim.id not in active
        assert {k.decode() for k in await admin.hkeys("pd:it:phantoms")} == active
        assert desk_store.stale_bots() == set()
    finally:
        await flaky.aclose()
        await admin.aclose()
        await db.dispose()  # type: ignore[attr-defined]


async def test_runs_without_redis_when_it_is_down(sqlite_url: str, market: list[CandleSeries]) -> None:
    dead = "redis://127.0.0.1:1/0"
    store, db, redis = await _open(sqlite_url, dead)
    try:
        candles = list(ReplayFeed(market).candles())[:5_000]
        await run(Engine(CONFIG), _stream(candles), store, flush_every=1_000)
        assert store.stale_bots() == {"it"}  # Redis missed every write: rebuilt when it answers
        assert (await store.counts("it"))["signals"] >= 0
        assert (await store.restore("it")).checkpoint is not None
    finally:
        if redis is not None:
            await redis.aclose()
        await db.dispose()  # type: ignore[attr-defined]


async def test_learning_data_export(sqlite_url: str, market: list[CandleSeries], tmp_path: Path) -> None:
    store, db, _ = await _open(sqlite_url)
    try:
        await run(Engine(CONFIG), _stream(list(ReplayFeed(market).candles())), store, flush_every=10_000)
        n = await store.export_learning_data("it", tmp_path / "learn.parquet")
        frame = pd.read_parquet(tmp_path / "learn.parquet")
        closed = [p for p in await store.closed_phantoms("it") if p.exit_reason != "gap"]
        assert n == len(frame) == len(closed) > 0
        assert {"f_rsi", "f_adx", "win", "realized_r", "strategy"} <= set(frame.columns)
        assert set(frame["win"]) <= {0, 1}
    finally:
        await db.dispose()  # type: ignore[attr-defined]
