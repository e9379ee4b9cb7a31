"""The aiogram side: one thin handler per command of the table and one for button presses.

Authorization already happened (auth.py put `actor` in the handler data); a handler builds the
context, calls `commands.execute` (parse → desk → render) and sends the replies: text split under
4096 characters, charts as photos from memory, buttons as inline keyboards.
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import BufferedInputFile, CallbackQuery, Message

from bot.telegram import render as rd
from bot.telegram.commands import COMMANDS, Context, execute, parse_line
from bot.telegram.keyboards import Confirm, Confirmations, Promote, Recovery, Refresh, markup, press
from bot.telegram.render import Reply
from core.desk import Actor, Desk

log = logging.getLogger(__name__)

INTERNAL_ERROR = "⚠️ something went wrong on the desk's side; it is logged"


def _context(data: dict[str, Any]) -> Context:
    return Context(desk=data["desk"], actor=data["actor"], confirmations=data["confirmations"],
                   extras={"auth": data.get("auth"), "app_url": data.get("app_url")})


async def send(message: Message, replies: list[Reply]) -> None:
    for reply in replies:
        keyboard = markup(reply.buttons)
        if reply.photo is not None:
            caption = reply.text if rd.units(reply.text) <= rd.CAPTION_LIMIT else None
            await message.answer_photo(BufferedInputFile(reply.photo, reply.photo_name), caption=caption,
                                       reply_markup=keyboard)
            if caption is None:
                for chunk in rd.split(reply.text):
                    await message.answer(chunk)
            continue
        chunks = rd.split(reply.text)
        for i, chunk in enumerate(chunks):  # the buttons go under the last part
            await message.answer(chunk, reply_markup=keyboard if i == len(chunks) - 1 else None)


def _command_handler(name: str) -> Any:
    async def handle(message: Message, command: CommandObject, actor: Actor, **data: Any) -> None:
        args = (command.args or "").split()
        try:
            replies = await execute(_context({**data, "actor": actor}), name, args)
        except Exception:
            log.exception("telegram: /%s failed", name)
            replies = [Reply(INTERNAL_ERROR)]
        await send(message, replies)

    handle.__name__ = f"cmd_{name}"
    return handle


async def unknown_command(message: Message, actor: Actor, **data: Any) -> None:
    name, args, mention = parse_line(message.text or "")
    me = await message.bot.me() if message.bot else None
    if mention and me is not None and mention.lower() != (me.username or "").lower():
        return  # addressed to another bot in a group
    await send(message, await execute(_context({**data, "actor": actor}), name, args))


async def plain_text(message: Message) -> None:
    if message.chat.type == "private":
        await message.answer("send /help for the commands")


async def on_press(query: CallbackQuery, actor: Actor, **data: Any) -> None:
    ctx = _context({**data, "actor": actor})
    parsed = None
    for factory in (Confirm, Recovery, Promote, Refresh):
        if query.data and query.data.startswith(factory.__prefix__ + ":"):
            try:
                parsed = factory.unpack(query.data)
            except (ValueError, TypeError):
                parsed = None
            break
    if parsed is None:
        await query.answer("unknown or outdated button")
        return
    try:
        result = await press(ctx, parsed)
    except Exception:
        log.exception("telegram: button %s failed", query.data)
        await query.answer("failed; it is logged", show_alert=True)
        return
    await query.answer(result.answer[:200], show_alert=result.alert)  # first: the client stops spinning
    message = query.message if isinstance(query.message, Message) else None
    if message is None:
        return
    try:
        if result.edit is not None:
            await message.edit_text(rd.split(result.edit.text)[0], reply_markup=markup(result.edit.buttons))
        elif result.drop_keyboard:
            await message.edit_reply_markup(reply_markup=None)
    except TelegramBadRequest as exc:  # "message is not modified" (a refresh with nothing new), too old...
        log.debug("telegram: edit after a press skipped: %s", exc.message)


def build_router() -> Router:
    router = Router(name="desk")
    for name in COMMANDS:
        router.message.register(_command_handler(name), Command(name, ignore_case=True))
    router.message.register(unknown_command, F.text.startswith("/"))
    router.message.register(plain_text, F.text)
    router.callback_query.register(on_press)
    return router


__all__ = ["Confirmations", "Desk", "build_router", "send"]
