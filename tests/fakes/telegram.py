"""Telegram without Telegram, two ways.

- `RecordingSession`: an aiogram session that answers every Bot API method in-process with a plausible
  result and records the call (handler tests through `Dispatcher.feed_update`, the /stats benchmark).
  Methods listed in `fail` raise the given exceptions first (retry and conflict tests).
- `FakeBotAPI`: a local Bot API server (aiohttp, its own thread and loop) for the real host process
  with TELEGRAM_API_SERVER pointing at it. It answers `/bot<token>/<method>` for getMe, getUpdates
  (long poll, offset semantics), sendMessage, sendPhoto (multipart; the photo bytes are kept),
  editMessageText, editMessageReplyMarkup, answerCallbackQuery, setMyCommands, setChatMenuButton, deleteWebhook,
  getWebhookInfo, setWebhook. The test injects updates (messages, button presses with a button's
  callback_data) and reads what the bot sent. `conflict_next(n)` answers the next n getUpdates with 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageReplyMarkup,
    EditMessageText,
    GetMe,
    GetUpdates,
    SendMessage,
    SendPhoto,
    TelegramMethod,
)
from aiogram.types import BufferedInputFile, Chat, Message, PhotoSize, User
from aiohttp import web

from tests.servers import free_port

T = TypeVar("T")
TOKEN = "123456:" + "A" * 35
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "desk", "username": "desk_bot"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- in-process ------------------------------------------------------------------------------------------
@dataclass
class Call:
    name: str  # Bot API method name, e.g. "sendMessage"
    method: TelegramMethod[Any]
    at: float  # perf_counter when the request was made

    @property
    def text(self) -> str:
        return getattr(self.method, "text", None) or getattr(self.method, "caption", None) or ""

    @property
    def callback_data(self) -> list[str]:
        markup = getattr(self.method, "reply_markup", None)
        rows = getattr(markup, "inline_keyboard", None) or []
        return [b.callback_data for row in rows for b in row if b.callback_data]


class RecordingSession(BaseSession):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.fail: dict[str, list[BaseException]] = {}
        self.on_request: Callable[[Call], None] | None = None
        self.delay = 0.0  # seconds each request takes
        self._ids = itertools.count(1000)

    async def close(self) -> None:
        pass

    async def stream_content(self, url: str, headers: dict[str, Any] | None = None, timeout: int = 30,  # noqa: ASYNC109
                             chunk_size: int = 65536, raise_for_status: bool = True) -> AsyncGenerator[bytes, None]:
        yield b""

    def named(self, *names: str) -> list[Call]:
        return [c for c in self.calls if c.name in names]

    def sent(self) -> list[Call]:
        """What a user would see: messages and photos."""
        return self.named("sendMessage", "sendPhoto")

    def clear(self) -> None:
        self.calls.clear()

    async def make_request(self, bot: Bot, method: TelegramMethod[T],
                           timeout: int | None = None) -> T:  # noqa: ASYNC109 - aiogram's signature
        call = Call(method.__api_method__, method, time.perf_counter())
        self.calls.append(call)
        if self.on_request is not None:
            self.on_request(call)
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(method, GetUpdates):
            await asyncio.sleep(0.01)  # a long poll that returns at once would never yield to the loop
        queue = self.fail.get(call.name)
        if queue:
            raise queue.pop(0)
        return self._result(bot, method)  # type: ignore[return-value]

    def _message(self, chat_id: Any, **extra: Any) -> Message:
        return Message(message_id=next(self._ids), date=datetime.now(UTC),
                       chat=Chat(id=int(chat_id or 0), type="private"), from_user=User(**BOT_USER), **extra)

    def _result(self, bot: Bot, method: TelegramMethod[Any]) -> Any:
        if isinstance(method, GetMe):
            return User(**BOT_USER)
        if isinstance(method, SendMessage):
            return self._message(method.chat_id, text=method.text, reply_markup=method.reply_markup)
        if isinstance(method, SendPhoto):
            return self._message(method.chat_id, caption=method.caption,
                                 photo=[PhotoSize(file_id="f", file_unique_id="u", width=1000, height=650)])
        if isinstance(method, EditMessageText):
            return self._message(method.chat_id, text=method.text, reply_markup=method.reply_markup)
        if isinstance(method, EditMessageReplyMarkup):
            return self._message(method.chat_id, text="-")
        if isinstance(method, GetUpdates):
            return []
        if isinstance(method, AnswerCallbackQuery):
            return True
        return True


def photo_bytes(call: Call) -> bytes:
    photo = getattr(call.method, "photo", None)
    assert isinstance(photo, BufferedInputFile), photo
    return photo.data


# --- a local Bot API server -------------------------------------------------------------------------------------
@dataclass
class Sent:
    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    message_id: int | None = None

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        return None if value is None else int(value)

    @property
    def text(self) -> str:
        return str(self.params.get("text") or self.params.get("caption") or "")

    @property
    def callback_data(self) -> list[str]:
        markup = self.params.get("reply_markup")
        if not markup:
            return []
        rows = json.loads(markup).get("inline_keyboard", []) if isinstance(markup, str) else markup["inline_keyboard"]
        return [b["callback_data"] for row in rows for b in row if b.get("callback_data")]

    @property
    def photo(self) -> bytes | None:
        ref = str(self.params.get("photo") or "")
        return self.files.get(ref.removeprefix("attach://")) if ref else None


class FakeBotAPI:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.port = free_port()
        self.sent: list[Sent] = []
        self.requests: list[str] = []  # every method called, in order
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._conflicts = 0
        self._stopping = False
        self.delays: dict[str, float] = {}  # method -> seconds before it answers (a slow Bot API)
        self._loop = asyncio.new_event_loop()
        self._new_update: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-bot-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> FakeBotAPI:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._stopping = True  # a long poll in progress answers now, not after its timeout
        if self._new_update is not None:
            self._loop.call_soon_threadsafe(self._new_update.set)
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> FakeBotAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        self._new_update = asyncio.Event()
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    # --- the test's side ------------------------------------------------------------------------------
    def _push(self, kind: str, payload: dict[str, Any]) -> int:
        with self._lock:
            update_id = next(self._update_ids)
            self._updates.append({"update_id": update_id, kind: payload})
        assert self._new_update is not None
        self._loop.call_soon_threadsafe(self._new_update.set)
        return update_id

    @staticmethod
    def user(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": f"user{user_id}", "username": f"user{user_id}"}

    def send_text(self, user_id: int, text: str) -> int:
        """A private message from `user_id` (its chat id is the user id, as in Telegram)."""
        message = {"message_id": next(self._message_ids), "date": int(time.time()), "text": text,
                   "chat": {"id": user_id, "type": "private"}, "from": self.user(user_id)}
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return self._push("message", message)

    def press(self, user_id: int, data: str, message: Sent | None = None) -> str:
        """A button press carrying `data`, on the message the bot sent (or a bare one)."""
        callback_id = f"cb{next(self._callback_ids)}"
        msg = {"message_id": message.message_id if message and message.message_id else 1, "date": int(time.time()),
               "chat": {"id": user_id, "type": "private"}, "from": BOT_USER, "text": message.text if message else "-"}
        self._push("callback_query", {"id": callback_id, "from": self.user(user_id), "chat_instance": "ci",
                                      "data": data, "message": msg})
        return callback_id

    def conflict_next(self, polls: int) -> None:
        """The next `polls` getUpdates calls answer 409, as when another process polls this token."""
        self._conflicts = polls

    def to(self, chat_id: int, method: str | tuple[str, ...] = ("sendMessage", "sendPhoto")) -> list[Sent]:
        names = (method,) if isinstance(method, str) else method
        with self._lock:
            return [s for s in self.sent if s.method in names and s.chat_id == chat_id]

    def answers(self, callback_id: str) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.method == "answerCallbackQuery"
                    and s.params.get("callback_query_id") == callback_id]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or predicate}; sent: "
                             f"{[(s.method, s.chat_id, s.text[:60]) for s in self.sent[-15:]]}")

    def reply_to(self, chat_id: int, after: int, timeout: float = 30.0, contains: str = "") -> Sent:
        """The first message or photo to `chat_id` after the first `after` of them containing `contains`."""
        def found() -> Sent | None:
            return next((s for s in self.to(chat_id)[after:] if contains in s.text), None)
        return self.wait_for(found, timeout, f"a reply to {chat_id} containing {contains!r}")

    # --- the server ------------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params, files = await _params(request)
        self.requests.append(method)
        await asyncio.sleep(self.delays.get(method, 0))
        handler = getattr(self, f"_m_{method.lower()}", None)
        if handler is None:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found: method not found"},
                                     status=404)
        return await handler(params, files)

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    def _record(self, method: str, params: dict[str, Any], files: dict[str, bytes] | None = None) -> Sent:
        sent = Sent(method, params, files or {})
        with self._lock:
            self.sent.append(sent)
        return sent

    def _message(self, sent: Sent, **extra: Any) -> dict[str, Any]:
        sent.message_id = sent.message_id or int(sent.params.get("message_id") or next(self._message_ids))
        message = {"message_id": sent.message_id, "date": int(time.time()), "from": BOT_USER,
                   "chat": {"id": sent.chat_id or 0, "type": "private"}, **extra}
        if sent.params.get("reply_markup"):
            message["reply_markup"] = json.loads(sent.params["reply_markup"])
        return message

    async def _m_getme(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        return self._ok(BOT_USER)

    async def _m_getupdates(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        if self._conflicts > 0:
            self._conflicts -= 1
            return web.json_response({"ok": False, "error_code": 409, "description":
                                      "Conflict: terminated by other getUpdates request; make sure that only one "
                                      "bot instance is running"}, status=409)
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 10.0)
        deadline = asyncio.get_running_loop().time() + timeout
        assert self._new_update is not None
        while True:
            with self._lock:
                if offset:  # confirmed: forget what came before, as Telegram does
                    self._updates = [u for u in self._updates if u["update_id"] >= offset]
                pending = [u for u in self._updates if u["update_id"] >= offset]
                self._new_update.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if pending or remaining <= 0 or self._stopping:
                return self._ok(pending[:100])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), remaining)

    async def _m_sendmessage(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        sent = self._record("sendMessage", params)
        return self._ok(self._message(sent, text=sent.text))

    async def _m_sendphoto(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        sent = self._record("sendPhoto", params, files)
        if sent.photo is None:
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: no photo"},
                                     status=400)
        photo = [{"file_id": "p1", "file_unique_id": "u1", "width": 1000, "height": 650,
                  "file_size": len(sent.photo)}]
        return self._ok(self._message(sent, photo=photo, **({"caption": sent.text} if sent.text else {})))

    async def _m_editmessagetext(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        sent = self._record("editMessageText", params)
        return self._ok(self._message(sent, text=sent.text))

    async def _m_editmessagereplymarkup(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        sent = self._record("editMessageReplyMarkup", params)
        return self._ok(self._message(sent, text="-"))

    async def _m_answercallbackquery(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        self._record("answerCallbackQuery", params)
        return self._ok(True)

    async def _m_setmycommands(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        self._record("setMyCommands", params)
        return self._ok(True)

    async def _m_setchatmenubutton(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        self._record("setChatMenuButton", params)
        return self._ok(True)

    async def _m_deletewebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        self._record("deleteWebhook", params)
        return self._ok(True)

    async def _m_setwebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        self._record("setWebhook", params)
        return self._ok(True)

    async def _m_getwebhookinfo(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        return self._ok({"url": "", "has_custom_certificate": False, "pending_update_count": 0})


async def _params(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Form fields (urlencoded or multipart) and uploaded files; a JSON body works too."""
    params: dict[str, Any] = dict(request.query)
    files: dict[str, bytes] = {}
    if request.content_type == "application/json":
        params.update(await request.json())
    elif request.content_type == "multipart/form-data":
        reader = await request.multipart()
        async for part in reader:
            if part.filename is not None:  # type: ignore[union-attr]
                files[part.name or ""] = await part.read()  # type: ignore[union-attr]
            else:
                params[part.name or ""] = await part.text()  # type: ignore[union-attr]
    elif request.can_read_body:
        params.update(await request.post())
    return params, files
