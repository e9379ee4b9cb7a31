"""Redis killed while the desk trades: nothing is lost, trading continues, and when Redis is back the
desk rebuilds its hot state from the database."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import text

from storage.db import create_engine
from tests.conftest import CANDLES
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


async def _mirrored(url: str) -> tuple[set[str], int]:
    client = AsyncRedis.from_url(url)
    try:
        ids = {k.decode() for k in await client.hkeys("pd:main:phantoms")}
        windows = len(await client.keys("pd:main:winrate:*"))
        return ids, windows
    finally:
        await client.aclose()


def test_redis_killed_mid_run(tmp_path: Path, pg_url: str) -> None:
    redis = Redis().start()
    port = redis.port
    env = desk_env(DATABASE_URL=pg_url, REDIS_URL=redis.url, SECRET_KEY="k" * 40, MARKET_FEED="replay",
                   FEED_DATA=str(CANDLES / "binance_spot_2020-12_2021-07"), FEED_SPEED="8000",
                   DEFAULT_SYMBOLS="BTCUSDT,ETHUSDT", REDIS_WATCH_S="1")
    assert run(["migrate"], tmp_path, env).returncode == 0
    desk = DeskProcess(tmp_path, env).start()
    try:
        desk.wait_healthy()
        time.sleep(4)
        redis.stop(signal.SIGKILL)  # everything Redis held is gone
        before = desk.health()[1]["bots"][0]["candles"]
        time.sleep(4)
        body = desk.health()[1]
        assert body["redis"] == "unavailable" and body["status"] == "ok"
        assert body["bots"][0]["candles"] > before and body["bots"][0]["error"] is None  # still trading
        redis = Redis(port=port).start()  # back, empty
        desk.wait_drained()
        time.sleep(2)  # the watch job runs every second
        assert "Redis is back: hot state rebuilt from the database" in desk.output
        active = asyncio.run(_active_ids(pg_url))
        mirrored, windows = asyncio.run(_mirrored(redis.url))
        redis_log = "\n".join(line for line in desk.output.splitlines() if "Redis" in line)
        assert mirrored == active and windows > 0, redis_log
        assert "Traceback" not in desk.output
    finally:
        desk.terminate(timeout=20)
        redis.stop()
