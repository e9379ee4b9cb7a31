"""/retrain is answered at once, even behind a retrain already running; the gate's verdict follows as a notice
and the challenger is in the model registry (the effect, not the reply)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.runtime import Runtime
from bot.settings import load_settings
from core.config import BotConfig
from core.trader import Notice
from storage import migrations
from storage.bots import upsert_bot
from storage.db import create_engine, session_factory
from storage.models import MLModel
from tests.conftest import CANDLES
from tests.fakes.clock import wait_until
from tests.unit.test_ml import signal_data


class GatedPool(ThreadPoolExecutor):
    """A worker that starts each job only once the gate opens: a retrain that is "running" for as long as
    the test needs."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.gate = threading.Event()
        self.started = threading.Event()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        def gated() -> Any:
            self.started.set()
            self.gate.wait()
            return fn(*args, **kwargs)
        return super().submit(gated)


async def test_retrain_is_answered_at_once_and_its_verdict_follows(tmp_path: Path, sqlite_url: str) -> None:
    await asyncio.to_thread(migrations.upgrade, sqlite_url)
    db = create_engine(sqlite_url, null_pool=True)
    config = BotConfig(id="main", symbols=["BTCUSDT"])
    async with session_factory(db).begin() as session:
        await upsert_bot(session, config)
    settings = load_settings(database_url=sqlite_url, data_dir=tmp_path / "var", market_feed="replay",
                             feed_data=CANDLES / "binance_spot_2020-12_2021-07")
    notices: list[Notice] = []
    runtime = Runtime(settings, db, None, notices.append)
    pool = GatedPool()
    try:
        await runtime.start()
        await wait_until(lambda: runtime.trader("main") is not None, "the bot's state to be restored", 60)
        scorer = runtime.bots["main"].scorer
        for outcome in [*signal_data(600, 1.5, seed=3), *signal_data(600, 1.5, 4, "scalp", start=600)]:
            scorer.observe(outcome)
        assert scorer.due() == ["scalp", "trend_pullback"]
        runtime.pool = pool  # type: ignore[assignment]  # any Executor: the worker process is beside the point
        scheduled = asyncio.create_task(runtime.retrain_due("main"))
        await wait_until(pool.started.is_set, "the scheduled retrain to be running", 30)

        async with asyncio.timeout(30):  # a reply that waited for the gate would never come
            queued = await runtime.retrain("main", None)
        # scalp trains now, trend_pullback waits its turn in the same worker: the reply waits for neither
        assert queued.strategies == ["scalp", "trend_pullback"] and queued.behind == ["scalp"]
        assert not [n for n in notices if n.kind == "retrain_done"]  # nothing is decided yet

        pool.gate.set()
        await scheduled
        await wait_until(lambda: any(n.kind == "retrain_done" for n in notices), "the verdict's notice", 60)
        [done] = [n for n in notices if n.kind == "retrain_done"]
        for strategy in ("scalp", "trend_pullback"):
            verdict = scorer.verdict(strategy)
            assert verdict is not None and verdict.version >= 600  # the feed's own phantoms may add outcomes
            verb = "promoted" if verdict.promoted else "refused"
            assert f"{strategy} v{verdict.version} {verb}: {verdict.why}" in done.text
            async with session_factory(db)() as session:
                versions = (await session.scalars(select(MLModel.version).where(
                    MLModel.bot_id == "main", MLModel.strategy == strategy).order_by(MLModel.version))).all()
            # the scheduled training and, only if outcomes came in meanwhile, the request's own
            assert versions[0] >= 600 and versions[-1] == verdict.version and len(versions) <= 2
    finally:
        pool.gate.set()
        await runtime.stop()
        pool.shutdown()
        await db.dispose()
