"""FakeBybit: a local Bybit v5 server for tests that drive the real pybit client.

It runs an aiohttp app on 127.0.0.1 (a free port) in its own thread and event loop, because pybit's
WebSocket client connects synchronously from its own threads and must not depend on the test's loop.

Public market data today:
- WebSocket `/v5/public/linear`: subscribe/ping replies in the v5 format, kline pushes by the test,
  dropping connections (close frame or abort), going silent, refusing new connections, raw garbage.
- REST `GET /v5/market/kline`: newest-first string rows from an in-memory series the test controls.
Private endpoints (orders, positions, the private stream) are meant to be added next to these routes.

Every public method is called from the test's thread; it runs on the server's loop and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from core.market.candle import INTERVAL_MS, Candle, dt_to_ms

T = TypeVar("T")


def kline_row(candle: Candle) -> list[str]:
    """A get_kline row: [start, open, high, low, close, volume, turnover], all strings."""
    return [
        str(candle.open_ms),
        _num(candle.open),
        _num(candle.high),
        _num(candle.low),
        _num(candle.close),
        _num(candle.volume),
        _num(candle.turnover or 0.0),
    ]


def kline_entry(candle: Candle, *, confirm: bool, timestamp_ms: int | None = None) -> dict[str, Any]:
    """One `data` entry of a v5 kline push."""
    start = candle.open_ms
    end = start + INTERVAL_MS[candle.interval] - 1
    return {
        "start": start,
        "end": end,
        "interval": candle.interval,
        "open": _num(candle.open),
        "close": _num(candle.close),
        "high": _num(candle.high),
        "low": _num(candle.low),
        "volume": _num(candle.volume),
        "turnover": _num(candle.turnover or 0.0),
        "confirm": confirm,
        "timestamp": timestamp_ms if timestamp_ms is not None else end if confirm else start + 1,
    }


def _num(value: float) -> str:
    return repr(float(value))


@dataclass(eq=False)
class _Conn:
    id: str
    ws: web.WebSocketResponse
    request: web.Request
    topics: set[str] = field(default_factory=set)
    muted: bool = False


class FakeBybit:
    """Use as a context manager (`with FakeBybit(clock) as fake:`) or start()/stop()."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._lock = threading.Lock()  # guards the candle series (written by the test, read by handlers)
        self._series: dict[tuple[str, str], dict[int, Candle]] = {}
        self._conns: set[_Conn] = set()
        self._conn_ids = itertools.count(1)
        self.refusing = False
        self._kline_failures = 0
        # what the server saw, for assertions
        self.connections_seen = 0
        self.subscribe_requests: list[list[str]] = []
        self.subscribed: Counter[str] = Counter()  # topic -> subscribe requests naming it (all connections)
        self.connection_topics: list[set[str]] = []  # per accepted connection, in order
        self.pings = 0
        self.kline_requests: list[dict[str, str]] = []

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> FakeBybit:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # surface bind errors in the test thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-bybit", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeBybit:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """REST base URL (what pybit HTTP's `endpoint` should be)."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def ws_url(self) -> str:
        """The public linear stream."""
        return f"ws://127.0.0.1:{self._port}/v5/public/linear"

    # -- test controls: candles -------------------------------------------------------------------------

    def set_history(self, symbol: str, interval: str, candles: Iterable[Candle]) -> None:
        """Replace the REST series of (symbol, interval); include the open candle as the newest if wanted."""
        with self._lock:
            self._series[(symbol, interval)] = {c.open_ms: c for c in candles}

    def add_candles(self, candles: Iterable[Candle]) -> None:
        """Add or replace candles in their series."""
        with self._lock:
            for c in candles:
                self._series.setdefault((c.symbol, c.interval), {})[c.open_ms] = c

    def push_kline(self, candle: Candle, *, confirm: bool = True) -> int:
        """Push one kline to the connections subscribed to its topic; returns how many got it."""
        return self.push_klines([candle], confirm=confirm)

    def push_klines(self, candles: Iterable[Candle], *, confirm: bool = True) -> int:
        """One message per candle; returns the number of messages sent."""
        messages = []
        for c in candles:
            topic = f"kline.{c.interval}.{c.symbol}"
            ts = int(self._clock().timestamp() * 1000)
            body = {"topic": topic, "type": "snapshot", "ts": ts, "data": [kline_entry(c, confirm=confirm)]}
            messages.append((topic, json.dumps(body)))
        return self._call(self._send_many(messages))

    def push_message(self, topic: str, message: dict[str, Any]) -> int:
        """Push an arbitrary JSON object to the subscribers of `topic` (e.g. several entries in `data`)."""
        return self._call(self._send_many([(topic, json.dumps(message))]))

    def push_raw(self, text: str | dict[str, Any] | list[Any]) -> int:
        """Send anything (garbage text, wrong shapes) to every live connection."""
        payload = text if isinstance(text, str) else json.dumps(text)
        return self._call(self._send_many([(None, payload)]))

    def fail_kline_requests(self, count: int) -> None:
        """The next `count` kline requests answer retCode 10016 (Bybit's "server error")."""
        self._kline_failures = count

    # -- test controls: connections ---------------------------------------------------------------------

    def drop_connections(self, *, abrupt: bool = False) -> int:
        """Close every public connection (a close frame, or with abrupt=True a TCP abort)."""
        return self._call(self._drop(abrupt))

    def go_silent(self, silent: bool = True) -> None:
        """Silence the current connections: no pushes, replies or pongs; the socket stays open.
        New connections are served normally; go_silent(False) unmutes everyone."""
        for conn in list(self._conns):
            conn.muted = silent

    def refuse_connections(self, refuse: bool = True) -> None:
        """Answer new WebSocket handshakes with HTTP 503 (an outage)."""
        self.refusing = refuse

    def subscribers(self, topic: str) -> int:
        """Open, unmuted connections currently subscribed to `topic`."""
        return sum(1 for c in list(self._conns) if topic in c.topics and not c.muted and not c.ws.closed)

    @property
    def open_connections(self) -> int:
        return sum(1 for c in list(self._conns) if not c.ws.closed)

    # -- server -----------------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "FakeBybit is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/v5/public/linear", self._ws_public)
        app.router.add_get("/v5/market/kline", self._kline)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        await self._drop(abrupt=True)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _ws_public(self, request: web.Request) -> web.StreamResponse:
        if self.refusing:
            return web.Response(status=503, text="service unavailable")
        # autoping off: pings are answered by hand so that a silenced connection really says nothing
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        conn = _Conn(id=uuid.uuid4().hex[:16], ws=ws, request=request)
        self._conns.add(conn)
        self.connections_seen += 1
        self.connection_topics.append(conn.topics)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    if not conn.muted:
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await self._command(conn, msg.data)
        finally:
            self._conns.discard(conn)
        return ws

    async def _command(self, conn: _Conn, text: str) -> None:
        try:
            request = json.loads(text)
            op, req_id = request.get("op"), request.get("req_id", "")
        except (ValueError, AttributeError):
            await self._reply(conn, {"success": False, "ret_msg": "error:invalid json", "conn_id": conn.id})
            return
        if op == "subscribe":
            args = [str(a) for a in request.get("args") or []]
            conn.topics.update(args)
            self.subscribe_requests.append(args)
            self.subscribed.update(args)
            reply = {"success": True, "ret_msg": "", "conn_id": conn.id, "req_id": req_id, "op": "subscribe"}
        elif op == "unsubscribe":
            conn.topics.difference_update(request.get("args") or [])
            reply = {"success": True, "ret_msg": "", "conn_id": conn.id, "req_id": req_id, "op": "unsubscribe"}
        elif op == "ping":
            self.pings += 1
            reply = {"success": True, "ret_msg": "pong", "conn_id": conn.id, "req_id": req_id, "op": "ping"}
        else:
            reply = {"success": False, "ret_msg": f"error:handler not found,topic:{op}", "conn_id": conn.id}
        await self._reply(conn, reply)

    async def _reply(self, conn: _Conn, body: dict[str, Any]) -> None:
        if not conn.muted and not conn.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.send_str(json.dumps(body))

    async def _send_many(self, messages: list[tuple[str | None, str]]) -> int:
        sent = 0
        for topic, payload in messages:
            for conn in list(self._conns):
                if conn.muted or conn.ws.closed or (topic is not None and topic not in conn.topics):
                    continue
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.send_str(payload)
                    sent += 1
        return sent

    async def _drop(self, abrupt: bool) -> int:
        conns = list(self._conns)
        for conn in conns:
            if abrupt:
                if conn.request.transport is not None:
                    conn.request.transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.ws.close(code=1001, message=b"going away"), 2)
        return len(conns)

    async def _kline(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.kline_requests.append(q)
        if self._kline_failures > 0:
            self._kline_failures -= 1
            return self._error(10016, "Internal server error.")
        if q.get("category") != "linear":
            return self._error(10001, "params error: category only support linear")
        interval = q.get("interval", "")
        if interval not in INTERVAL_MS:
            return self._error(10001, "params error: invalid interval")
        try:
            limit = int(q.get("limit", 200))
            start = int(q["start"]) if "start" in q else None
            end = int(q["end"]) if "end" in q else None
        except ValueError:
            return self._error(10001, "params error")
        if not 1 <= limit <= 1000:
            return self._error(10001, "params error: limit must be in [1, 1000]")
        symbol = q.get("symbol", "")
        with self._lock:
            series = self._series.get((symbol, interval))
            if series is None:
                return self._error(10001, "params error: symbol invalid")
            rows = [c for ms, c in series.items() if (start is None or ms >= start) and (end is None or ms <= end)]
        rows.sort(key=lambda c: c.open_ms, reverse=True)  # newest first, the newest `limit` of the range
        return web.json_response(
            {
                "retCode": 0,
                "retMsg": "OK",
                "result": {"category": "linear", "symbol": symbol, "list": [kline_row(c) for c in rows[:limit]]},
                "retExtInfo": {},
                "time": dt_to_ms(self._clock()),
            }
        )

    def _error(self, code: int, message: str) -> web.Response:
        return web.json_response(
            {"retCode": code, "retMsg": message, "result": {}, "retExtInfo": {}, "time": dt_to_ms(self._clock())}
        )
