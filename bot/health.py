"""GET /health: 200 only when the database answers (Railway's deploy health check relies on that) and
nothing is broken: every bot task alive, the market feed running or done, no bot's ledger faulted (trades
held in memory because nothing could store them: a full disk). `faults` says what is wrong."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy import select, text

from core.desk import BotHealth, HealthDoc
from storage.hotstate import redis_status
from storage.instances import trader_of
from storage.models import Bot

if TYPE_CHECKING:
    from bot.host import Host

log = logging.getLogger(__name__)
HOST_KEY: web.AppKey[Host] = web.AppKey("host")


async def _database(host: Host) -> tuple[str, list[BotHealth]]:
    try:
        async with asyncio.timeout(3), host.db.connect() as conn:
            rows = (await conn.execute(text("SELECT bot_id, status, status_reason, status_since, mode, open_trades "
                                            "FROM bot_status_view"))).all()
            owners = {r.id: r for r in (await conn.execute(
                select(Bot.id, Bot.owner_instance, Bot.last_heartbeat))).all()}
    except Exception as exc:  # any failure means "not healthy"; the reason goes to the log, not the body
        log.warning("health: database check failed: %s", type(exc).__name__)
        return "unavailable", []
    now = datetime.now(UTC)
    return "ok", [{"id": r.bot_id, "status": r.status, "reason": r.status_reason,
                   "since": None if r.status_since is None else str(r.status_since), "mode": r.mode,
                   "open_trades": r.open_trades,
                   "traded_by": trader_of(o.owner_instance, o.last_heartbeat, now)
                   if (o := owners.get(r.bot_id)) is not None else None} for r in rows]


async def health(request: web.Request) -> web.Response:
    body = await health_document(request.app[HOST_KEY])
    return web.json_response(body, status=200 if body["status"] == "ok" else 503)


async def health_document(host: Host) -> HealthDoc:
    database, bots = await _database(host)
    runtime = host.runtime
    for b in bots:
        running = runtime.bots.get(b["id"]) if runtime else None
        b["running_here"] = running is not None
        if running is not None:
            b["traded_by"] = host.instance
            state = running.trader.state
            if state.halted:  # the trader halted before its checkpoint reached the database: never "running"
                b["status"], b["reason"] = "halted", state.halt_reason
            b["error"] = running.error
            b["candles"] = running.processed
            b["skipped_before_checkpoint"] = running.skipped  # only warmed: the bot had traded them before
            b["backlog"] = running.queue.qsize()  # candles queued, not yet processed
            b["unsaved"] = running.processed - running.saved  # processed, not yet in the database
            b["fault"] = running.ledger.fault  # trades held in memory: no new positions until it clears
    newest = host.newest_candle
    faults = runtime.faults() if runtime else []
    body: HealthDoc = {
        "status": "ok" if database == "ok" and not faults else "error",
        "faults": faults,
        "candles_refused": runtime.refused_candles() if runtime else {},
        "version": host.version,
        "database": database,
        "redis": await redis_status(host.redis),
        "scheduler": "running" if host.scheduler is not None and host.scheduler.running else "stopped",
        "telegram": host.telegram_mode,
        "telegram_refused": host.telegram_auth.stats() if host.telegram_auth is not None else None,
        "bots": bots,
        "newest_candle_age_s": round((datetime.now(UTC) - newest).total_seconds(), 1) if newest else None,
        "uptime_s": round((datetime.now(UTC) - host.started_at).total_seconds(), 1),
        "instance": host.instance,
        "leading": runtime.leading if runtime else True,  # runs the desk-wide jobs (backup, daily report)
        "storage": await host.storage(),
        "standby_bots": sorted(runtime.standby) if runtime else [],
        "feed": runtime.feed_state() if runtime else "off",
        "feed_restarts": runtime.feed_restarts if runtime else 0,
    }
    return body


def health_routes(app: web.Application, host: Host) -> None:
    app[HOST_KEY] = host
    app.router.add_get("/health", health)
