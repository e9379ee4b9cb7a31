"""The Telegram operator interface: wiring of the Bot (optionally on a self-hosted Bot API server), the
dispatcher (auth middleware + command router), webhook or polling, and the decisions whose effects go
beyond a recovery item (promoting a model).

Modules: auth.py (who may do what), commands.py (the command table), keyboards.py (buttons and
presses), render.py (HTML, tables, splitting), handlers.py (aiogram handlers), notifier.py (messages
to the admins).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramConflictError
from aiogram.methods import GetUpdates, TelegramMethod
from aiogram.types import BotCommand, MenuButtonWebApp, WebAppInfo
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web

from bot.settings import Settings
from bot.telegram.auth import AuthMiddleware
from bot.telegram.commands import COMMANDS
from bot.telegram.handlers import build_router
from bot.telegram.keyboards import Confirmations
from core.desk import Desk

log = logging.getLogger(__name__)
WEBHOOK_PATH = "/telegram/webhook"
CONFLICT_PAUSE_S = 5.0


def build_bot(settings: Settings) -> Bot:
    assert settings.telegram_bot_token is not None
    session = (AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_server))
               if settings.telegram_api_server else AiohttpSession())
    session.middleware(ConflictOnce())
    return Bot(settings.telegram_bot_token.get_secret_value(), session=session,
               default=DefaultBotProperties(parse_mode=ParseMode.HTML))


def build_dispatcher(desk: Desk, settings: Settings) -> Dispatcher:
    """Auth as the outer middleware of every update, then the command router. Handlers get `desk`,
    `confirmations` and `auth` from the dispatcher's data."""
    dp = Dispatcher()
    auth = AuthMiddleware(settings.admin_ids, settings.viewer_ids)
    dp.update.outer_middleware(auth)
    dp["desk"] = desk
    dp["auth"] = auth
    dp["confirmations"] = Confirmations()
    dp["app_url"] = settings.miniapp_url  # the Mini App: the menu button and a button under /status
    dp.include_router(build_router())
    dp.startup.register(_warm_stats)
    if not settings.admin_ids:
        log.warning("TELEGRAM_ADMIN_IDS is empty: nobody can change the desk from Telegram")
    return dp


async def _warm_stats(desk: Desk) -> None:
    """Load the closed trades' columns in the background as Telegram starts, so the first /stats over a
    long history is answered as fast as the next ones (storage/closed_trades.py)."""
    task = asyncio.get_running_loop().create_task(desk.store.warm(), name="warm-stats")
    _background.add(task)
    task.add_done_callback(_warmed)


def _warmed(task: asyncio.Task[Any]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not preload the trade statistics: %s", type(task.exception()).__name__)


_background: set[asyncio.Task[Any]] = set()


def bot_commands() -> list[BotCommand]:
    """The menu Telegram shows (setMyCommands): the same table as /help."""
    return [BotCommand(command=c.name, description=c.about[:256]) for c in COMMANDS.values()]


def mount_webhook(app: web.Application, dp: Dispatcher, bot: Bot, settings: Settings) -> None:
    """The webhook route lives on the same aiohttp server as /health; a wrong secret gets 401."""
    assert settings.telegram_webhook_secret is not None
    SimpleRequestHandler(dispatcher=dp, bot=bot,
                         secret_token=settings.telegram_webhook_secret.get_secret_value()).register(app, WEBHOOK_PATH)
    setup_application(app, dp, bot=bot)


async def set_webhook(bot: Bot, settings: Settings, dp: Dispatcher | None = None) -> None:
    assert settings.telegram_webhook_url and settings.telegram_webhook_secret
    url = settings.telegram_webhook_url
    if not url.endswith(WEBHOOK_PATH):
        url += WEBHOOK_PATH
    await bot.set_webhook(url, secret_token=settings.telegram_webhook_secret.get_secret_value(),
                          drop_pending_updates=False,
                          allowed_updates=dp.resolve_used_update_types() if dp is not None else None)
    await _set_commands(bot, dp["app_url"] if dp is not None else None)
    log.info("Telegram webhook set")


async def start_polling(dp: Dispatcher, bot: Bot) -> None:
    """Polling for local use: an old webhook is removed first (getUpdates refuses to run beside one),
    and a 409 conflict (another process polling this token) is reported once, not every retry."""
    if not any(isinstance(m, ConflictOnce) for m in bot.session.middleware):
        bot.session.middleware(ConflictOnce())
    try:
        await bot.delete_webhook(drop_pending_updates=False)
        await _set_commands(bot, dp["app_url"])
    except Exception as exc:  # polling itself retries; this is a courtesy
        log.warning("Telegram: could not prepare polling (%s); polling anyway", type(exc).__name__)
    await dp.start_polling(bot, handle_signals=False, close_bot_session=False,
                           allowed_updates=dp.resolve_used_update_types())


async def _set_commands(bot: Bot, app_url: str | None = None) -> None:
    try:
        await bot.set_my_commands(bot_commands())
    except Exception as exc:  # the menu is a convenience
        log.warning("Telegram: setMyCommands failed (%s)", type(exc).__name__)
    if app_url is None:  # no https address: Telegram would refuse the Mini App's button
        return
    try:
        await bot.set_chat_menu_button(menu_button=MenuButtonWebApp(text="Desk", web_app=WebAppInfo(url=app_url)))
    except Exception as exc:
        log.warning("Telegram: setChatMenuButton failed (%s)", type(exc).__name__)


class ConflictOnce(BaseRequestMiddleware):
    """getUpdates answered 409 (another poller, or a webhook is set): logged once, then polled again
    quietly every few seconds as an empty batch — aiogram would log an error on every retry."""

    def __init__(self, pause_s: float = CONFLICT_PAUSE_S) -> None:
        self.pause_s = pause_s
        self.conflicts = 0
        self.reported = False

    async def __call__(self, make_request: NextRequestMiddlewareType[Any], bot: Bot,
                       method: TelegramMethod[Any]) -> Any:
        if not isinstance(method, GetUpdates):
            return await make_request(bot, method)
        try:
            result = await make_request(bot, method)
        except TelegramConflictError as exc:
            self.conflicts += 1
            if not self.reported:
                self.reported = True
                log.error("Telegram: getUpdates conflict (409: %s). Another process polls this bot token or a "
                          "webhook is set; this one keeps waiting and retries quietly.", exc.message)
            await asyncio.sleep(self.pause_s)
            return []
        if self.reported:
            self.reported = False
            log.info("Telegram: the getUpdates conflict is over after %d refused polls", self.conflicts)
            self.conflicts = 0
        return result


__all__ = ["WEBHOOK_PATH", "AuthMiddleware", "ConflictOnce", "bot_commands", "build_bot", "build_dispatcher",
           "mount_webhook", "set_webhook", "start_polling"]
