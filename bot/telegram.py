"""Telegram transport wiring: Bot (optionally on a self-hosted Bot API server), polling or webhook."""

from __future__ import annotations

import logging

from aiogram import Bot, Dispatcher, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.filters import CommandStart
from aiogram.types import Message
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web

from bot.settings import Settings

log = logging.getLogger(__name__)
WEBHOOK_PATH = "/telegram/webhook"


def build_bot(settings: Settings) -> Bot:
    assert settings.telegram_bot_token is not None
    session = (AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_server))
               if settings.telegram_api_server else AiohttpSession())
    return Bot(settings.telegram_bot_token.get_secret_value(), session=session,
               default=DefaultBotProperties(parse_mode=ParseMode.HTML))


def build_dispatcher(desk: object = None, settings: Settings | None = None) -> Dispatcher:
    dp = Dispatcher()
    router = Router(name="core")

    @router.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer("phantomdesk is running.")

    dp.include_router(router)
    return dp


def mount_webhook(app: web.Application, dp: Dispatcher, bot: Bot, settings: Settings) -> None:
    """The webhook route lives on the same aiohttp server as /health; a wrong secret gets 401."""
    assert settings.telegram_webhook_secret is not None
    SimpleRequestHandler(dispatcher=dp, bot=bot,
                         secret_token=settings.telegram_webhook_secret.get_secret_value()).register(app, WEBHOOK_PATH)
    setup_application(app, dp, bot=bot)


async def set_webhook(bot: Bot, settings: Settings) -> None:
    assert settings.telegram_webhook_url and settings.telegram_webhook_secret
    url = settings.telegram_webhook_url
    if not url.endswith(WEBHOOK_PATH):
        url += WEBHOOK_PATH
    await bot.set_webhook(url, secret_token=settings.telegram_webhook_secret.get_secret_value(),
                          drop_pending_updates=False)
    log.info("Telegram webhook set")
