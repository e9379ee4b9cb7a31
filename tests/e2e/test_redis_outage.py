"""Redis killed while the desk trades: nothing is lost, trading continues, and when Redis is back the
desk rebuilds its hot state from the database."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import text

from storage.db import create_engine
from tests.conftest import CANDLES
from tests.fakes.clock import wait_until
from tests.hostproc import DeskProcess, desk_env, run
from tests.servers import Redis


async def _active_ids(url: str) -> set[str]:
    db = create_engine(url, null_pool=True)
    try:
        async with db.connect() as conn:
            rows = (await conn.execute(text("SELECT id FROM phantom_trades WHERE bot_id='main' AND status='active'")))
            return {r[0] for r in rows}
    finally:
        await db.dispose()


def _until(predicate: Callable[[], Any], what: str, within: float = 60.0) -> None:
    """Poll a condition (a value, or a coroutine: a Redis read) until it holds."""
    asyncio.run(wait_until(predicate, what, within, every=0.2))


async def _mirrored(url: str) -> tuple[set[str], int]:
    client = AsyncRedis.from_url(url)
    try:
        ids = {k.decode() for k in await client.hkeys("pd:main:phantoms")}
        windows = len(await client.keys("pd:main:winrate:*"))
        return ids, windows
    except OSError:
        return set(), 0
    finally:
        await client.aclose()


async def _consistent(pg_url: str, redis_url: str) -> bool:
    return (await _mirrored(redis_url))[0] == await _active_ids(pg_url)


async def _lease_holder(url: str) -> str | None:
    client = AsyncRedis.from_url(url, decode_responses=True)
    try:
        return await client.get("pd:lease:main")
    finally:
        await client.aclose()


async def _any_mirrored(url: str) -> bool:
    ids, _ = await _mirrored(url)
    return bool(ids)


def test_redis_killed_mid_run(tmp_path: Path, pg_url: str) -> None:
    redis = Redis().start()
    port = redis.port
    env = desk_env(DATABASE_URL=pg_url, REDIS_URL=redis.url, SECRET_KEY="k" * 40, MARKET_FEED="replay",
                   FEED_DATA=str(CANDLES / "binance_spot_2020-12_2021-07"), FEED_SPEED="8000",
                   DEFAULT_SYMBOLS="BTCUSDT,ETHUSDT", REDIS_WATCH_S="1",
                   LEASE_TTL_S="3")  # renewed every second
    assert run(["migrate"], tmp_path, env).returncode == 0
    desk = DeskProcess(tmp_path, env).start()
    try:
        desk.wait_healthy()
        _until(lambda: _any_mirrored(redis.url), "phantoms mirrored to Redis (something to lose)")
        redis.stop(signal.SIGKILL)  # everything Redis held is gone
        before = desk.health()[1]["bots"][0]["candles"]
        _until(lambda: desk.health()[1]["redis"] == "unavailable", "the desk to see Redis gone")
        _until(lambda: "Redis is away" in desk.output, "the watch job (every second) to see Redis gone")
        _until(lambda: desk.health()[1]["bots"][0]["candles"] > before + 100, "trading to go on without Redis")
        body = desk.health()[1]
        assert body["status"] == "ok" and body["bots"][0]["error"] is None
        redis = Redis(port=port).start()  # back, empty
        desk.wait_drained()
        _until(lambda: "Redis is back: hot state rebuilt from the database" in desk.output,
               "the watch job (every second) to rebuild Redis")
        _until(lambda: _consistent(pg_url, redis.url), "Redis to hold exactly the database's active phantoms")
        assert asyncio.run(_mirrored(redis.url))[1] > 0  # the win-rate windows are back too
        # Redis came back without the lease key: the database lock still stands, so the renewal writes it again
        # and the bot is still traded here
        _until(lambda: _lease_holder(redis.url), "the lease renewal to write its Redis copy again")
        assert [b["running_here"] for b in desk.health()[1]["bots"]] == [True]
        assert "lease lost" not in desk.output
        assert "Traceback" not in desk.output
    finally:
        desk.terminate(timeout=20)
        redis.stop()
