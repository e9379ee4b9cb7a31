"""The process host (`python -m bot serve`): the composition root of the long-running desk.

Start order: settings → logging → Sentry → database (must be at head) → Redis (optional) → health
server → scheduler → Telegram. SIGTERM/SIGINT stop it cleanly within 10 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import __version__, stopping
from bot.health import health_routes
from bot.runtime import Runtime
from bot.sentry import setup_sentry
from bot.settings import Settings
from core.desk import Desk, HealthDoc, JobStatus
from core.trader import Notice
from jobs.desk_jobs import DeskJobs
from jobs.scheduler import JobRecorder, install, listing
from storage.db import create_engine
from storage.desk_store import SqlDeskStore
from storage.health import StorageLimits, storage_health, thresholds_exceeded
from storage.hotstate import connect_redis
from storage.leases import Leases
from storage.migrations import NotAtHead, ensure_at_head
from storage.models import Candle

if TYPE_CHECKING:  # aiogram takes seconds to import, redis 0.1 s: only a desk that uses them pays for them
    from aiogram import Bot, Dispatcher
    from redis.asyncio import Redis

log = logging.getLogger("phantomdesk")

SHUTDOWN_BUDGET_S = 8.0  # of the 10 s Railway and the acceptance test allow
JOBS_SETTLE_S = 0.5  # job runs in progress (a journal flush ends between two records once stopping)
STOP_DEADLINE_S = 9.5  # from the signal: past this, whatever hangs, the process exits (bot/stopping.py)

EXIT_OK, EXIT_FAILURE, EXIT_NOT_MIGRATED = 0, 1, 3
T = TypeVar("T")


def instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class Host:
    settings: Settings
    db: AsyncEngine
    version: str = __version__
    instance: str = field(default_factory=instance_id)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    redis: Redis | None = None
    scheduler: AsyncIOScheduler | None = None
    telegram_mode: str = "off"
    newest_stored: datetime | None = None
    runtime: Runtime | None = None
    desk: Desk | None = None
    notifier: Any = None
    leases: Leases | None = None
    telegram_auth: Any = None  # refusals of strangers, counted for /health
    miniapp: Any = None  # the Mini App's API (bot/miniapp), with a bot token
    jobs: JobRecorder | None = None
    # coroutines run first at shutdown, newest first
    shutdown_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def newest_candle(self) -> datetime | None:
        live = self.runtime.newest_candle if self.runtime else None
        return live or self.newest_stored

    @newest_candle.setter
    def newest_candle(self, value: datetime | None) -> None:
        self.newest_stored = value

    def notify(self, notice: Notice) -> None:
        """Every notice is logged; with Telegram on, the notifier sends it to the admins (never blocking)."""
        log.info("notice %s %s: %s", notice.kind, notice.bot_id, notice.text)
        if self.notifier is not None:
            self.notifier.notify(notice)

    def attach_telegram(self, tg_bot: Bot) -> None:
        from bot.telegram.notifier import Notifier  # here: aiogram takes seconds to import

        self.notifier = Notifier(tg_bot, sorted(self.settings.admin_ids), self.desk)  # desk: recovery items
        self.notifier.start()

    async def detach_telegram(self) -> None:
        if self.notifier is not None:
            await self.notifier.stop()

    async def job_listing(self) -> list[JobStatus]:
        if self.scheduler is None or self.jobs is None:
            return []
        return listing(self.scheduler, self.jobs)

    def storage_limits(self) -> StorageLimits:
        s = self.settings
        return StorageLimits(min_free_disk_pct=s.min_free_disk_pct, max_journal_backlog=s.max_journal_backlog,
                             max_db_bytes=int(s.max_db_size_mb * 1024 * 1024) if s.max_db_size_mb else None)

    async def storage(self) -> dict[str, Any]:
        """Database size and growth, free disk, journal backlog, and which configured limits they cross."""
        figures = await storage_health(self.db, self.settings.data_dir, self.settings.data_dir / "journal")
        figures["alerts"] = thresholds_exceeded(figures, self.storage_limits())
        return figures

    async def health_doc(self) -> HealthDoc:
        from bot.health import health_document

        return await health_document(self)


async def _newest_candle(db: AsyncEngine) -> datetime | None:
    async with db.connect() as conn:
        return (await conn.execute(select(func.max(Candle.open_time)))).scalar()


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if not stop.is_set():
            stopping.exit_within(STOP_DEADLINE_S, EXIT_FAILURE)
        stop.set()

    for sig in stopping.SIGNALS:
        loop.add_signal_handler(sig, on_signal)


class Stopped(Exception):
    """A SIGTERM/SIGINT came during start-up."""


async def _waiting(desk: Desk | None) -> str:
    """The decisions announced before this start (they are not sent again): a pointer to them."""
    if desk is None:
        return ""
    try:
        old = [i for i in await desk.recovery() if i.get("announced_at") is not None]
    except Exception as exc:  # the database is down: the start notice goes without the count
        log.warning("could not count the waiting decisions: %s", type(exc).__name__)
        return ""
    return f"; {len(old)} decision{'s' * (len(old) != 1)} still waiting: /recovery" if old else ""


async def _unless_stopped(stop: asyncio.Event, step: Coroutine[Any, Any, T]) -> T:
    """A start-up step that writes nothing (a check, a connection, a webhook), cancelled by a stop."""
    task = asyncio.ensure_future(step)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise Stopped
    return task.result()


async def serve(settings: Settings, *, check_only: bool = False) -> int:
    """Run the desk until SIGTERM/SIGINT. With check_only, exit 0 once /health answers 200 (no trading)."""
    stop = asyncio.Event()
    _install_signal_handlers(stop)  # first: from here on a signal stops the desk cleanly, start-up included
    setup_sentry(settings, __version__)

    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)  # the head check is routine
    engine = create_engine(settings.database_url)
    try:
        await _unless_stopped(stop, ensure_at_head(engine))
        newest = await _unless_stopped(stop, _newest_candle(engine))
        redis = await _unless_stopped(stop, connect_redis(settings.redis_url))
    except Stopped:
        await engine.dispose()
        log.info("stopped during start-up")
        return EXIT_OK
    except NotAtHead as exc:
        log.error("%s", exc)
        await engine.dispose()
        return EXIT_NOT_MIGRATED
    except Exception as exc:
        log.error("cannot reach the database: %s", exc)
        await engine.dispose()
        return EXIT_FAILURE

    host = Host(settings=settings, db=engine, redis=redis)
    host.newest_candle = newest
    host.leases = Leases(engine, host.instance, settings.data_dir / "leases", host.redis, settings.lease_ttl_s)
    host.runtime = Runtime(settings, engine, host.redis, host.notify, host.leases, stopping=stop)
    desk_store = SqlDeskStore(engine)
    desk_store.storage_fn = host.storage
    host.desk = Desk(desk_store, host.runtime, clock=lambda: datetime.now(UTC), health_fn=host.health_doc,
                     jobs_fn=host.job_listing)

    app = web.Application()
    health_routes(app, host)

    tg_bot: Bot | None = None
    dp: Dispatcher | None = None
    if settings.telegram_bot_token is not None:
        from bot.telegram import build_bot, build_dispatcher, mount_webhook

        tg_bot, dp = build_bot(settings), build_dispatcher(host.desk, settings)
        host.telegram_auth = dp["auth"]
        host.attach_telegram(tg_bot)
        if settings.telegram_webhook_url:
            mount_webhook(app, dp, tg_bot, settings)
            host.telegram_mode = "webhook"
        else:
            host.telegram_mode = "polling"
        from bot.miniapp import mount_miniapp  # the Mini App's logins are signed with the bot token

        host.miniapp = mount_miniapp(app, host.desk, settings.telegram_bot_token.get_secret_value(),
                                     host.telegram_auth.role, settings.miniapp_auth_max_age_s)

    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", settings.port)
    await site.start()
    log.info("phantomdesk %s listening on 0.0.0.0:%d (%s)", __version__, settings.port,
             "sqlite" if settings.embedded else "postgresql")

    host.scheduler = AsyncIOScheduler(timezone=UTC, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
    host.scheduler.start()
    host.jobs = JobRecorder(engine, host.notify, leads=lambda: host.runtime is None or host.runtime.leading)
    install(host.scheduler, DeskJobs(host).specs(), host.jobs)

    code = EXIT_OK
    polling: asyncio.Task[None] | None = None
    try:
        if not check_only:
            await host.runtime.start()  # not cancelled (it writes): a stop ends it between bots and journal records
            if stop.is_set():
                raise Stopped
            bots = ", ".join(host.runtime.bots) or "no bots"
            host.notify(Notice("start", "", f"phantomdesk {__version__} started: {bots}{await _waiting(host.desk)}"))
        if tg_bot is not None and dp is not None:
            if host.telegram_mode == "webhook":
                from bot.telegram import set_webhook

                try:
                    await _unless_stopped(stop, set_webhook(tg_bot, settings, dp))
                except Stopped:
                    raise
                except Exception as exc:
                    log.error("could not set the Telegram webhook: %s", exc)
            else:
                from bot.telegram import start_polling

                polling = asyncio.create_task(start_polling(dp, tg_bot), name="telegram-polling")  # a 409 logged once
        if check_only:
            code = await _check_health(settings.port)
            stop.set()
        await stop.wait()
    except Stopped:
        log.info("stopped during start-up")
    log.info("stopping")
    if not check_only:
        host.notify(Notice("stop", "", f"phantomdesk {__version__} stopping"))
    host.scheduler.pause()  # no job starts now; the runs in progress finish below
    try:
        async with asyncio.timeout(SHUTDOWN_BUDGET_S):
            for hook in reversed(host.shutdown_hooks):
                await hook()
            await host.runtime.stop()  # each bot saves its last batch: the state snapshot
            await host.jobs.settle(JOBS_SETTLE_S)
            host.scheduler.shutdown(wait=False)
            if dp is not None and polling is not None:
                try:
                    await dp.stop_polling()
                except RuntimeError:  # not polling yet (deleteWebhook, setMyCommands): it would start after this
                    polling.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await polling
            await host.detach_telegram()
            await runner.cleanup()
            if tg_bot is not None:
                await tg_bot.session.close()
            if host.redis is not None:
                await host.redis.aclose()
            await engine.dispose()
    except TimeoutError:
        log.error("shutdown took longer than %.0fs; exiting anyway", SHUTDOWN_BUDGET_S)
        return EXIT_FAILURE
    log.info("stopped")
    return code


async def _check_health(port: int) -> int:
    """The smoke test of `serve --check`: ask our own /health, as Railway's deploy check would."""
    from aiohttp import ClientSession

    async with ClientSession() as client, client.get(f"http://127.0.0.1:{port}/health") as resp:
        log.info("GET /health -> %d %s", resp.status, await resp.text())
        return EXIT_OK if resp.status == 200 else EXIT_FAILURE
