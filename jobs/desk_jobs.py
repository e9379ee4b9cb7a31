"""The desk's scheduled jobs (fixed ids, re-added at every start). Each is thin: it calls the runtime,
the stores or the desk. `DeskJobs(host).specs()` returns them for jobs.scheduler.install; `host` is any
`JobHost` (bot.host.Host is the one the desk wires; the jobs never import it)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.trader import Notice
from jobs.backup import daily_backup
from jobs.scheduler import JobSpec
from storage.candle_store import DEFAULT_RETENTION
from storage.db import session_factory
from storage.engine_store import SqlEngineStore
from storage.hotstate import redis_errors
from storage.models import Bot
from storage.offsite import Offsite, OffsiteError
from storage.recovery import RecoveryBook
from storage.snapshots import Snapshots

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from bot.runtime import Runtime
    from bot.settings import Settings
    from core.desk import Desk


class JobHost(Protocol):
    """What the jobs use of the process that runs them."""

    settings: Settings
    db: AsyncEngine
    instance: str
    redis: Redis | None
    runtime: Runtime | None
    desk: Desk | None

    def notify(self, notice: Notice) -> None: ...

    async def storage(self) -> dict[str, Any]: ...

log = logging.getLogger("phantomdesk.jobs")


def _now() -> datetime:
    return datetime.now(UTC)


class DeskJobs:
    def __init__(self, host: JobHost) -> None:
        self.host = host
        self.snapshots = Snapshots(host.db)
        self.redis_was_up: bool | None = None
        self.storage_alerts: list[str] = []

    @property
    def bots(self) -> dict[str, Any]:
        return self.host.runtime.bots if self.host.runtime else {}

    async def heartbeat(self) -> None:
        """Proof of life for every bot this process trades (its leases renew on their own, faster), and
        pause/resume decided elsewhere (the console, another replica's Telegram) applied here."""
        now = _now()
        async with session_factory(self.host.db).begin() as session:
            for bot_id in self.bots:
                await session.execute(update(Bot).where(Bot.id == bot_id).values(
                    last_heartbeat=now, owner_instance=self.host.instance))
            statuses = dict((await session.execute(select(Bot.id, Bot.status))).all())
        assert self.host.runtime is not None
        for bot_id, bot in list(self.bots.items()):
            paused = statuses.get(bot_id) == "paused"
            if bot.trader.state.paused != paused:
                self.host.runtime.set_paused(bot_id, paused)
            await self.host.runtime.finish_decisions(bot_id)  # decided where this bot is not traded

    async def state_snapshots(self) -> None:
        now = _now()
        for bot_id, bot in self.bots.items():
            await self.snapshots.state(bot_id, bot.trader, dict(bot.engine.counters), now)

    async def equity_snapshots(self) -> None:
        now = _now()
        for bot_id, bot in self.bots.items():
            equity = bot.trader.equity()
            await self.snapshots.equity(bot_id, "scheduled", equity, bot.trader.state.equity,
                                        equity - bot.trader.state.equity, now)

    async def performance_snapshots(self) -> None:
        """00:05 UTC: yesterday's row for every bot."""
        now = _now()
        day = (now - timedelta(days=1)).date()
        assert self.host.desk is not None
        for bot_id, bot in self.bots.items():
            facts = await self.host.desk.store.facts(bot_id, None)
            await self.snapshots.performance(bot_id, day, facts, bot.config.capital, bot.trader.equity(), now)

    async def retention(self) -> None:
        now = _now()
        assert self.host.runtime is not None
        deleted = await self.host.runtime.candles.apply_retention(now, DEFAULT_RETENTION)
        pruned = await self.snapshots.prune(now)
        log.info("retention: candles %s, metrics %s", deleted, pruned)

    async def journal_flush(self) -> None:
        """The journal's backlog into the database, and trades held in memory (a full disk) written at
        last: a faulted ledger heals here even when no new trade comes to retry it."""
        stopping = self.host.runtime.stopping.is_set if self.host.runtime else None
        for bot in self.bots.values():
            report = await bot.ledger.flush_journal(stop=stopping)  # a stop ends it between two records
            if report.corrupt:
                self.host.notify(Notice("journal_corrupt", bot.id, f"{report.corrupt} corrupt journal line(s) of "
                                        f"bot {bot.id} were set aside: see the .corrupt file"))

    async def funding_refresh(self) -> None:
        """Funding settlements of the traded symbols (paper venues and phantoms settle with them)."""
        if self.host.runtime is not None:
            added = await self.host.runtime.refresh_funding()
            if added:
                log.info("funding: %d new settlement(s)", added)

    async def universe_refresh(self) -> None:
        """Bots whose symbols are a rule: selected again over Bybit's tickers; the feed follows, the operator hears
        of every change."""
        if self.host.runtime is not None:
            changes = await self.host.runtime.refresh_universe()
            if any(changes.values()):
                log.info("universe: %s", {k: (v.added, v.removed) for k, v in changes.items() if v})

    async def ml_retrain_check(self) -> None:
        assert self.host.runtime is not None
        for bot_id, bot in self.bots.items():
            if bot.scorer.due():
                await self.host.runtime.retrain_due(bot_id)

    async def reconciliation(self) -> None:
        """Live bots: positions, orders and executions vs the ledger (unambiguous fixes, recovery items)."""
        assert self.host.runtime is not None
        for bot_id, bot in self.bots.items():
            if bot.venue is not None:
                await self.host.runtime.reconcile(bot_id)

    async def expire_recovery(self) -> None:
        expired = await RecoveryBook(self.host.db).expire()
        if expired:
            log.info("%d recovery item(s) expired undecided", expired)

    async def redis_watch(self) -> None:
        """Redis came back after being away, or missed a mirror write: rebuild its hot state from the database."""
        redis = self.host.redis
        if redis is None:
            return
        try:
            await redis.ping()
            up = True
        except redis_errors():
            up = False
        store = SqlEngineStore(self.host.db, redis)
        if up and self.redis_was_up is False:
            rebuilt = {bot_id: await store.rebuild_redis(bot_id) for bot_id in self.bots}
            log.info("Redis is back: hot state rebuilt from the database %s", rebuilt)
            self.host.notify(Notice("redis_back", "", f"Redis is back; rebuilt from the database: {rebuilt}"))
        elif up and (stale := sorted(store.stale_bots() & set(self.bots))):
            rebuilt = {bot_id: await store.rebuild_redis(bot_id) for bot_id in stale}
            log.info("Redis missed writes: hot state rebuilt from the database %s", rebuilt)
        elif not up and self.redis_was_up is not False:
            log.warning("Redis is away: the database carries on; the hot state is rebuilt when it is back")
        self.redis_was_up = up

    async def backup(self) -> None:
        s = self.host.settings
        offsite = Offsite(s.backup_s3_url, s.backup_s3_endpoint, s.backup_s3_region) if s.backup_s3_url else None
        try:
            done = await daily_backup(self.host.db, s.backups, offsite=offsite)
        except OffsiteError as exc:  # the archive is safe on this disk only: the admins hear of it now
            self.host.notify(Notice("backup_offsite_failed", "", f"{exc}; the verified archive is on this disk only"))
            raise
        log.info("backup: %s", done)

    async def storage_watch(self) -> None:
        """Storage past a configured limit: the admins hear of it when the set of alerts changes."""
        alerts = (await self.host.storage())["alerts"]
        if alerts and alerts != self.storage_alerts:
            self.host.notify(Notice("storage", "", "storage: " + "; ".join(alerts)))
        self.storage_alerts = alerts

    async def daily_report(self) -> None:
        assert self.host.desk is not None
        stats = await self.host.desk.stats(days=1)
        text = (f"daily report: {stats['trades']} trades, net {stats['net_pnl']:+.2f} USDT, "
                f"win rate {(stats['win_rate'] or 0) * 100:.0f}%")
        self.host.notify(Notice("daily_report", "", text, {"stats": {k: str(v) for k, v in stats.items()}}))

    def specs(self) -> list[JobSpec]:
        every = IntervalTrigger
        report_hour, report_minute = self.host.settings.daily_report_utc
        return [
            JobSpec("heartbeat", self.heartbeat, every(seconds=30), misfire_grace_s=15),
            JobSpec("journal_flush", self.journal_flush, every(seconds=30), misfire_grace_s=30),
            JobSpec("redis_watch", self.redis_watch, every(seconds=self.host.settings.redis_watch_s),
                    misfire_grace_s=30),
            JobSpec("state_snapshot", self.state_snapshots, every(minutes=5), misfire_grace_s=120),
            JobSpec("reconciliation", self.reconciliation, every(minutes=5), misfire_grace_s=120),
            JobSpec("equity_snapshot", self.equity_snapshots, every(hours=1), misfire_grace_s=600),
            JobSpec("ml_retrain_check", self.ml_retrain_check, every(hours=1), misfire_grace_s=900),
            JobSpec("funding_refresh", self.funding_refresh, every(minutes=30), misfire_grace_s=900),
            JobSpec("universe_refresh", self.universe_refresh, every(seconds=self.host.settings.universe_refresh_s),
                    misfire_grace_s=300),
            JobSpec("expire_recovery", self.expire_recovery, every(hours=1), misfire_grace_s=900, desk_wide=True),
            JobSpec("performance_snapshot", self.performance_snapshots,
                    CronTrigger(hour=0, minute=5, timezone=UTC), misfire_grace_s=3600),
            JobSpec("retention", self.retention, CronTrigger(hour=0, minute=20, timezone=UTC), misfire_grace_s=3600,
                    desk_wide=True),
            JobSpec("storage_watch", self.storage_watch, every(hours=1), misfire_grace_s=900),
            JobSpec("backup", self.backup, CronTrigger(hour=0, minute=40, timezone=UTC), misfire_grace_s=3600,
                    desk_wide=True),
            JobSpec("daily_report", self.daily_report,
                    CronTrigger(hour=report_hour, minute=report_minute, timezone=UTC), misfire_grace_s=3600,
                    desk_wide=True),
        ]
