"""Scheduled jobs: runs recorded, three failures in a row tell the admins once, the rest keeps running;
snapshots (state, equity, daily performance unique per bot and day)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, select

from core.config import BotConfig
from core.exchange.paper import PaperBroker
from core.instruments import Instruments
from core.stats import TradeFacts
from core.trader import Notice, Trader
from jobs.scheduler import JobRecorder, JobSpec, install, listing
from storage import migrations
from storage.bots import upsert_bot
from storage.db import create_engine, session_factory
from storage.models import BotState, EquitySnapshot, JobRun, PerformanceSnapshot
from storage.snapshots import Snapshots

CONFIG = BotConfig(id="j", symbols=["BTCUSDT"])


async def _db(url: str):
    await asyncio.to_thread(migrations.upgrade, url)
    db = create_engine(url, null_pool=True)
    async with session_factory(db).begin() as session:
        await upsert_bot(session, CONFIG)
    return db


async def test_three_failures_one_alert_and_the_rest_keeps_running(db_url: str) -> None:
    db = await _db(db_url)
    notices: list[Notice] = []
    healthy_runs = 0

    async def broken() -> None:
        raise RuntimeError("exchange said no")

    async def healthy() -> None:
        nonlocal healthy_runs
        healthy_runs += 1

    scheduler = AsyncIOScheduler(timezone=UTC)
    recorder = JobRecorder(db, notices.append)
    install(scheduler, [JobSpec("broken", broken, IntervalTrigger(seconds=0.3)),
                        JobSpec("healthy", healthy, IntervalTrigger(seconds=0.3))], recorder)
    scheduler.start()
    try:
        for _ in range(100):
            await asyncio.sleep(0.1)
            if recorder.failures["broken"] >= 5:
                break
        rows = {r.job_id: r for r in listing(scheduler, recorder)}
        assert rows["broken"].last_status == "error" and rows["healthy"].last_status == "ok"
        assert rows["broken"].next_run is not None and "exchange said no" in (rows["broken"].last_error or "")
    finally:
        scheduler.shutdown(wait=False)
    try:
        assert recorder.failures["broken"] >= 5
        assert [n.kind for n in notices] == ["job_failing"]  # once per streak, not at every failure
        assert "exchange said no" in notices[0].text
        assert healthy_runs >= 4
        async with session_factory(db)() as session:
            errors = await session.scalar(select(func.count()).select_from(JobRun).where(
                JobRun.job_id == "broken", JobRun.status == "error"))
            oks = await session.scalar(select(func.count()).select_from(JobRun).where(
                JobRun.job_id == "healthy", JobRun.status == "ok"))
            sample = await session.scalar(select(JobRun.error).where(JobRun.job_id == "broken").limit(1))
        assert errors is not None and errors >= 3 and oks is not None and oks >= 3
        assert sample is not None and "RuntimeError: exchange said no" in sample
    finally:
        await db.dispose()


async def test_snapshots(db_url: str) -> None:
    db = await _db(db_url)
    snaps = Snapshots(db)
    now = datetime(2024, 5, 2, 0, 5, tzinfo=UTC)
    trader = Trader(CONFIG, Instruments(), PaperBroker(Instruments(), CONFIG.capital))
    try:
        await snaps.state("j", trader, {"candles": 10}, now)
        await snaps.equity("j", "initial", Decimal(10_000), Decimal(10_000), Decimal(0), now)
        facts = [TradeFacts("a", "BTCUSDT", "scalp", now - timedelta(days=2), now - timedelta(days=1, hours=2),
                            Decimal(50)),
                 TradeFacts("b", "BTCUSDT", "scalp", now - timedelta(days=1), now - timedelta(hours=3), Decimal(-20))]
        day = date(2024, 5, 1)
        await snaps.performance("j", day, facts, CONFIG.capital, Decimal(10_030), now)
        await snaps.performance("j", day, facts, CONFIG.capital, Decimal(10_030), now)  # re-run: same row
        async with session_factory(db)() as session:
            perf = (await session.scalars(select(PerformanceSnapshot))).all()
            assert len(perf) == 1
            assert (perf[0].trades, perf[0].daily_pnl, perf[0].total_pnl) == (1, Decimal(-20), Decimal(30))
            assert await session.scalar(select(func.count()).select_from(BotState)) == 1
            assert await session.scalar(select(func.count()).select_from(EquitySnapshot)) == 1
        assert (await snaps.prune(now + timedelta(days=100)))["bot_states"] == 1
    finally:
        await db.dispose()


async def test_heartbeat_applies_a_status_changed_elsewhere(db_url: str) -> None:
    """`bots pause` from the console (another process) reaches the running bot at the next heartbeat."""
    from types import SimpleNamespace

    from jobs.desk_jobs import DeskJobs
    from storage.bots import set_status

    db = await _db(db_url)
    trader = Trader(CONFIG, Instruments(), PaperBroker(Instruments(), CONFIG.capital))
    calls: list[tuple[str, bool]] = []

    def set_paused(bot_id: str, paused: bool) -> bool:
        calls.append((bot_id, paused))
        trader.state.paused = paused
        return True

    finished: list[str] = []

    async def finish_decisions(bot_id: str) -> None:  # decisions taken in the console are performed here too
        finished.append(bot_id)

    runtime = SimpleNamespace(bots={"j": SimpleNamespace(trader=trader)}, set_paused=set_paused,
                              finish_decisions=finish_decisions)
    host = SimpleNamespace(db=db, runtime=runtime, instance="test-1", settings=None)
    jobs = DeskJobs(host)  # type: ignore[arg-type]
    try:
        await jobs.heartbeat()
        assert calls == []  # nothing changed
        async with session_factory(db).begin() as session:
            await set_status(session, "j", "paused", "console")
        await jobs.heartbeat()
        assert calls == [("j", True)] and trader.state.paused
        async with session_factory(db).begin() as session:
            await set_status(session, "j", "running", None)
        await jobs.heartbeat()
        assert calls[-1] == ("j", False) and not trader.state.paused
        assert finished == ["j", "j", "j"]
    finally:
        await db.dispose()


async def test_a_desk_wide_job_runs_on_the_leading_replica_only(db_url: str) -> None:
    db = await _db(db_url)
    runs: list[str] = []
    leading = False

    async def backup() -> None:
        runs.append("backup")

    async def heartbeat() -> None:
        runs.append("heartbeat")

    recorder = JobRecorder(db, lambda _: None, leads=lambda: leading)
    desk_wide = recorder.wrap(JobSpec("backup", backup, IntervalTrigger(hours=1), desk_wide=True))
    own = recorder.wrap(JobSpec("heartbeat", heartbeat, IntervalTrigger(hours=1)))
    try:
        await desk_wide()
        await own()  # every replica runs its own jobs
        assert runs == ["heartbeat"]
        leading = True
        await desk_wide()
        assert runs == ["heartbeat", "backup"]
        async with session_factory(db)() as session:
            recorded = (await session.scalars(select(JobRun.job_id).order_by(JobRun.id))).all()
        assert recorded == ["heartbeat", "backup"]  # a run left to the leader is not recorded here
    finally:
        await db.dispose()
