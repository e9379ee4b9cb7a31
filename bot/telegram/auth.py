"""Who may do what, decided before any handler or filter runs (an outer middleware on every update).

- TELEGRAM_ADMIN_IDS: everything. TELEGRAM_VIEWER_IDS: reading only; an admin command or an admin
  button gets a clear "read-only" reply (the desk re-checks the role too).
- Anyone else: nothing is executed. The attempt is logged (user id and what was tried, never the
  message text) and counted; the user gets at most one "not authorized" reply per hour, so a stranger
  cannot make the bot spam or reveal more than that it exists. A stranger's button press is answered
  silently (the client stops spinning) inside the same hourly budget.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject, Update, User

from bot.telegram.commands import COMMANDS, READ_ONLY, parse_line
from bot.telegram.keyboards import ADMIN_PREFIXES, prefix_of
from core.desk import Actor, Role

log = logging.getLogger(__name__)

NOT_AUTHORIZED = "⛔ not authorized"
REPLY_EVERY_S = 3600.0


class AuthMiddleware(BaseMiddleware):
    def __init__(self, admin_ids: frozenset[int] | set[int], viewer_ids: frozenset[int] | set[int],
                 clock: Callable[[], float] = time.monotonic, reply_every_s: float = REPLY_EVERY_S) -> None:
        self.admin_ids = frozenset(admin_ids)
        self.viewer_ids = frozenset(viewer_ids) - self.admin_ids
        self.clock = clock
        self.reply_every_s = reply_every_s
        self.refused: Counter[int] = Counter()  # per user id
        self.refused_total = 0
        self.viewer_refusals = 0
        self._last_reply: dict[int, float] = {}

    @property
    def replies(self) -> int:
        """Strangers answered within the last reply window (for /health)."""
        now = self.clock()
        return sum(1 for t in self._last_reply.values() if now - t < self.reply_every_s)

    def role(self, user_id: int) -> Role | None:
        if user_id in self.admin_ids:
            return "admin"
        if user_id in self.viewer_ids:
            return "viewer"
        return None

    def stats(self) -> dict[str, Any]:
        return {"refused_total": self.refused_total, "refused_users": len(self.refused),
                "viewer_refusals": self.viewer_refusals}

    async def __call__(self, handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
                       event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        inner = _inner(event)
        if user is None or inner is None:  # channel posts, service updates: nobody to authorize
            return None
        role = self.role(user.id)
        if role is None:
            await self._refuse(user, inner)
            return None
        data["actor"] = Actor(user.id, user.username or user.full_name, role)
        if role == "viewer" and _wants_admin(inner):
            self.viewer_refusals += 1
            log.info("telegram: viewer %s tried an admin action", user.id)
            await _answer(inner, READ_ONLY, alert=True)
            return None
        return await handler(event, data)

    async def _refuse(self, user: User, inner: Message | CallbackQuery) -> None:
        self.refused[user.id] += 1
        self.refused_total += 1
        what = "button" if isinstance(inner, CallbackQuery) else (
            "/" + parse_line(inner.text)[0] if inner.text and inner.text.startswith("/") else "message")
        log.warning("telegram: refused user %s (%s), attempt %d", user.id, what, self.refused[user.id])
        now = self.clock()
        last = self._last_reply.get(user.id)
        may_reply = last is None or now - last >= self.reply_every_s
        if may_reply:
            self._last_reply[user.id] = now
        if isinstance(inner, CallbackQuery):
            await _answer(inner, NOT_AUTHORIZED if may_reply else None)
        elif may_reply:
            await _answer(inner, NOT_AUTHORIZED)


def _inner(event: TelegramObject) -> Message | CallbackQuery | None:
    if isinstance(event, Update):
        return event.message or event.edited_message or event.callback_query
    return event if isinstance(event, Message | CallbackQuery) else None


def _wants_admin(inner: Message | CallbackQuery) -> bool:
    if isinstance(inner, CallbackQuery):
        return prefix_of(inner.data) in ADMIN_PREFIXES
    if not inner.text or not inner.text.startswith("/"):
        return False
    name, args, _ = parse_line(inner.text)
    command = COMMANDS.get(name)
    return command is not None and command.needs_admin(args)


async def _answer(inner: Message | CallbackQuery, text: str | None, alert: bool = False) -> None:
    """Replies here are best effort: a failed "not authorized" must not turn into an error loop."""
    try:
        if isinstance(inner, CallbackQuery):
            await inner.answer(text, show_alert=alert and text is not None)
        elif text is not None:
            await inner.answer(text)
    except Exception as exc:  # logged, then dropped on purpose
        log.warning("telegram: could not answer an unauthorized/read-only event: %s", type(exc).__name__)
