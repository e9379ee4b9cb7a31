"""Notifications to the admin chats: trades, halts and breaker trips, recovery items, job failures,
start/stop, and the daily report.

`notify(notice)` is synchronous and only enqueues (put_nowait), so trading never waits for Telegram.
Each admin chat has its own queue and sender task:
- a per-chat rate limit (Telegram allows about one message per second to a chat); notices that pile up
  meanwhile are merged into one message (under 4096 characters) instead of being dropped;
- retries: TelegramRetryAfter waits what Telegram asks, network and server errors back off
  exponentially, both a limited number of times; after the last attempt the message is logged and
  dropped. A refused message (bad request, blocked by the user) is not retried;
- the same halt or breaker notice repeated within an hour is sent once.
With a desk, the notifier also announces new recovery items (with their buttons) as it finds them, once:
a delivered item is marked in the database and not sent again after a restart (/recovery lists it), and
sends the daily report at the configured UTC time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiohttp import ClientError

from bot.telegram import render as rd
from bot.telegram.keyboards import markup, recovery_rows
from bot.telegram.render import Button, esc
from core.desk import Desk
from core.trader import Notice, NoticeKind

log = logging.getLogger(__name__)

ICONS: dict[NoticeKind, str] = {  # one per kind (a test holds it to core.trader.NoticeKind)
    "trade_open": "🟢", "trade_close": "🔵", "drawdown_halt": "🛑", "breaker": "⚡", "bot_failed": "💥",
    "feed_failed": "💥", "order_failed": "❗", "job_failing": "⏰", "journal_corrupt": "❗", "start": "🚀",
    "stop": "🏁", "recovery": "🧰", "recovery_done": "🧰", "retrain_done": "🧠", "daily_report": "📊",
    "entry_rejected": "❗", "entry_cancelled": "↩️", "reconciled": "🔁", "strategy_failed": "🧩",
    "backup_offsite_failed": "🗄️", "lease_lost": "🔑", "redis_back": "🧊", "storage": "💾", "universe": "🌐",
}
DEDUPE_KINDS: frozenset[NoticeKind] = frozenset({"drawdown_halt", "breaker", "bot_failed", "feed_failed",
                                                 "job_failing", "order_failed", "strategy_failed"})
DEDUPE_S = 3600.0
MAX_BATCH = 200


@dataclass
class Outgoing:
    text: str  # HTML
    buttons: list[list[Button]] = field(default_factory=list)
    mergeable: bool = True
    item_id: int | None = None  # a recovery item: once delivered, a restart does not send it again


def format_notice(notice: Notice) -> str:
    icon = ICONS.get(notice.kind, "•")
    who = f"<b>{esc(notice.bot_id)}</b> · " if notice.bot_id else ""
    return f"{icon} {who}{esc(notice.text)}"


class Notifier:
    def __init__(self, bot: Bot, chat_ids: list[int], desk: Desk | None = None, *,
                 daily_at: dtime | str | None = None, min_interval_s: float = 1.0, attempts: int = 5,
                 backoff_s: float = 1.0, max_retry_after_s: float = 120.0, queue_size: int = 1000,
                 recovery_poll_s: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.bot = bot
        self.chat_ids = list(dict.fromkeys(chat_ids))
        self.desk = desk
        self.daily_at = _parse_time(daily_at) if daily_at is not None else None
        self.min_interval_s = min_interval_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.recovery_poll_s = recovery_poll_s
        self.clock = clock
        self.queues: dict[int, asyncio.Queue[Outgoing]] = {c: asyncio.Queue(queue_size) for c in self.chat_ids}
        self.sent = 0
        self.dropped = 0
        self.announced: set[int] = set()  # recovery items already sent
        self._recent: dict[tuple[str, str, str], float] = {}
        self._next_send: dict[int, float] = {}
        self._tasks: list[asyncio.Task[Any]] = []

    # --- in ---------------------------------------------------------------------------------------
    def notify(self, notice: Notice) -> None:
        """Enqueue for every admin chat; never blocks, never raises."""
        try:
            if notice.kind in DEDUPE_KINDS:
                key = (notice.kind, notice.bot_id, notice.text)
                now = self.clock()
                if now - self._recent.get(key, -DEDUPE_S) < DEDUPE_S:
                    return
                self._recent[key] = now
            self.enqueue(Outgoing(format_notice(notice)))
        except Exception:  # a notification must never break the caller (trading)
            log.exception("notifier: could not enqueue a %s notice", notice.kind)

    def enqueue(self, message: Outgoing) -> None:
        for chat_id, queue in self.queues.items():
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self.dropped += 1
                log.warning("notifier: queue of chat %s is full; a message was dropped", chat_id)

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        for chat_id in self.chat_ids:
            self._tasks.append(asyncio.create_task(self._sender(chat_id), name=f"notifier-{chat_id}"))
        if self.desk is not None:
            self._tasks.append(asyncio.create_task(self._watch_recovery(), name="notifier-recovery"))
            if self.daily_at is not None:
                self._tasks.append(asyncio.create_task(self._daily(), name="notifier-daily"))

    async def stop(self, drain_s: float = 1.5) -> None:
        """Give the queues a moment to empty (the stop notice), then end the tasks."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_s):
                for queue in self.queues.values():
                    await queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # --- out -------------------------------------------------------------------------------------------
    async def _sender(self, chat_id: int) -> None:
        queue = self.queues[chat_id]
        while True:
            batch = [await queue.get()]
            await self._pace(chat_id)  # wait for the rate limit first: what arrives meanwhile joins this batch
            while not queue.empty() and len(batch) < MAX_BATCH:  # what piled up while we waited goes together
                batch.append(queue.get_nowait())
            texts: list[str] = []
            for message in batch:  # in order; a message with buttons goes alone
                if message.mergeable:
                    texts.append(message.text)
                    continue
                for text in _merge(texts):
                    await self._send(chat_id, Outgoing(text))
                texts = []
                if await self._send(chat_id, message) and message.item_id is not None:
                    await self._announced(message.item_id)
            for text in _merge(texts):
                await self._send(chat_id, Outgoing(text))
            for _ in batch:
                queue.task_done()

    async def _pace(self, chat_id: int) -> None:
        wait = self._next_send.get(chat_id, 0.0) - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _send(self, chat_id: int, message: Outgoing) -> bool:
        loop = asyncio.get_running_loop()
        for attempt in range(1, self.attempts + 1):
            await self._pace(chat_id)
            self._next_send[chat_id] = loop.time() + self.min_interval_s
            try:
                await self.bot.send_message(chat_id, message.text, reply_markup=markup(message.buttons))
                self.sent += 1
                return True
            except TelegramRetryAfter as exc:
                delay = min(float(exc.retry_after), self.max_retry_after_s)
                log.warning("notifier: flood control for chat %s, retry in %.0fs (attempt %d/%d)", chat_id, delay,
                            attempt, self.attempts)
                self._next_send[chat_id] = loop.time() + delay
            except (TelegramNetworkError, TelegramServerError, ClientError, TimeoutError, OSError) as exc:
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.warning("notifier: sending to chat %s failed (%s), retry in %.0fs (attempt %d/%d)", chat_id,
                            type(exc).__name__, delay, attempt, self.attempts)
                self._next_send[chat_id] = loop.time() + delay
            except Exception as exc:  # refused (bad request, blocked): retrying cannot help
                log.error("notifier: chat %s refused a message (%s: %s); dropped", chat_id, type(exc).__name__,
                          getattr(exc, "message", exc))
                self.dropped += 1
                return False
        log.error("notifier: gave up on a message to chat %s after %d attempts; dropped", chat_id, self.attempts)
        self.dropped += 1
        return False

    # --- recovery items and the daily report -------------------------------------------------------------
    async def announce_recovery(self) -> int:
        """Send every pending recovery item not yet announced, each with its buttons."""
        from bot.telegram.commands import recovery_text

        assert self.desk is not None
        new = 0
        for item in await self.desk.recovery():
            if item["id"] in self.announced or item.get("announced_at") is not None:
                continue
            self.announced.add(item["id"])
            self.enqueue(Outgoing(f"{ICONS['recovery']} decision needed\n{recovery_text(item)}",
                                  recovery_rows(item), mergeable=False, item_id=int(item["id"])))
            new += 1
        return new

    async def _announced(self, item_id: int) -> None:
        assert self.desk is not None
        try:
            await self.desk.recovery_announced(item_id)
        except Exception as exc:  # the database is down: the item is sent again after a restart, no harm
            log.warning("notifier: could not mark recovery #%s announced: %s", item_id, type(exc).__name__)

    async def _watch_recovery(self) -> None:
        while True:
            try:
                await self.announce_recovery()
            except Exception as exc:  # the database may be down; next round
                log.warning("notifier: recovery check failed: %s", type(exc).__name__)
            await asyncio.sleep(self.recovery_poll_s)

    async def daily_report(self) -> str:
        """Yesterday's and all-time figures and the ML gate's verdicts of the day, sent to the admins; returns
        the text."""
        assert self.desk is not None
        day = await self.desk.daily(1)
        stats = await self.desk.stats(None)
        balance = await self.desk.balance()
        lines = [f"{ICONS['daily_report']} <b>Daily report</b> — {datetime.now(UTC):%Y-%m-%d} UTC",
                 f"today so far: {rd.money(day[-1][1] if day else 0)} USDT",
                 f"all time: {stats['trades']} trades, win rate {rd.pct(stats['win_rate'])}, "
                 f"net {rd.money(stats['net_pnl'])} USDT, max drawdown {rd.pct(stats['max_drawdown_pct'], False)}"]
        lines += [f"{esc(b.bot_id)}: equity {rd.money(b.equity, False)}" for b in balance]
        lines += [f"{ICONS['retrain_done']} {esc(v.bot_id)} {esc(v.strategy)} v{v.version} "
                  f"{'promoted' if v.promoted else 'refused'}: {esc(v.why)}"
                  f"{' · promote anyway? see /recovery' if v.asked else ''}" for v in await self.desk.ml_verdicts(1)]
        text = "\n".join(lines)
        self.enqueue(Outgoing(text, mergeable=False))
        return text

    async def _daily(self) -> None:
        assert self.daily_at is not None
        while True:
            await asyncio.sleep(seconds_until(self.daily_at, datetime.now(UTC)))
            try:
                await self.daily_report()
            except Exception:
                log.exception("notifier: the daily report failed")
            await asyncio.sleep(1)


def seconds_until(at: dtime, now: datetime) -> float:
    target = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    return (target - now).total_seconds()


def _parse_time(value: dtime | str) -> dtime:
    if isinstance(value, dtime):
        return value
    hour, _, minute = value.strip().partition(":")
    return dtime(int(hour), int(minute or 0))


def _merge(texts: list[str], limit: int = rd.SAFE_LIMIT) -> list[str]:
    """Join notices into as few messages as fit; a single notice too long is split."""
    out: list[str] = []
    current = ""
    for text in texts:
        for piece in rd.split(text, limit):
            if current and rd.units(current) + 1 + rd.units(piece) > limit:
                out.append(current)
                current = ""
            current = f"{current}\n{piece}" if current else piece
    if current:
        out.append(current)
    return out
