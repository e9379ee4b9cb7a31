"""Bybit public market data through pybit: one kline WebSocket connection per shard, and the REST kline query.

Both are thin: they move Bybit's wire data in and out and leave its meaning (parsing, ordering, gaps) to
core/market/bybit_feed.py. Everything here is blocking or runs in pybit's own threads; the feed calls it
through `asyncio.to_thread` and receives messages through a thread-safe `sink`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from pybit.unified_trading import HTTP, WebSocket

log = logging.getLogger(__name__)

MAINNET_PUBLIC_LINEAR = "wss://stream.bybit.com/v5/public/linear"
MAINNET_REST = "https://api.bybit.com"
FUNDING_PAGE = 200  # get_funding_rate_history's maximum limit

# Called in pybit's socket thread with (the socket, the decoded message or the raw text if it isn't JSON).
Sink = Callable[["PublicSocket", Any], None]


def _ignore(_message: Any) -> None:
    """pybit wants a per-topic callback; ours is never called because _on_message takes every frame."""



async def end_watchdog(task: asyncio.Task[Any] | None, within: float = 30.0) -> None:
    """A closing stream's watchdog: it sees the closing flag and ends; cancelled if it has not within `within`."""
    if task is not None:
        done, _ = await asyncio.wait({task}, timeout=within)
        if not done:
            task.cancel()

class PublicSocket(WebSocket):
    """One pybit public linear WebSocket carrying the kline topics of a shard of symbols.

    Three deliberate departures from plain pybit, each for a reason:
    - URL: pybit builds it inside `_connect` from "wss://{SUBDOMAIN}.{DOMAIN}.com/v5/public/linear"; the
      `domain`/`tld` arguments cannot express another scheme, host or port (ws://127.0.0.1:PORT in tests, a
      relay in production), and no constructor argument sets it. `_connect` is handed our URL instead (a URL
      without placeholders survives pybit's `.format()` unchanged, and pybit's own reconnects reuse it).
    - `_on_message`: pybit decodes and routes every frame itself and raises on a non-JSON frame, a message
      without a topic or an unmatched reply; a raise there makes pybit exit the socket for good. Here each
      frame goes to `sink` (decoded if it is JSON) and nothing can escape.
    - `retire()`: pybit's `exit()` can race its own reconnect (on_error reconnects while `handle_error` is
      set), which would leave a live socket nobody owns; retiring switches that off first and joins the thread.
    """

    def __init__(
        self,
        url: str,
        sink: Sink,
        *,
        ping_interval: float = 20,
        ping_timeout: float = 10,
        retries: int = 10,
    ) -> None:
        # set before pybit's __init__, which connects (and may call _connect/_on_message) before returning
        self._url = url
        self._sink = sink
        self._retired = False
        self._last_frame = time.monotonic()
        self.sink_errors = 0
        super().__init__(
            channel_type="linear",
            testnet=False,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            retries=retries,
            restart_on_error=True,
        )

    @classmethod
    def open(
        cls,
        url: str,
        symbols: Sequence[str],
        intervals: Sequence[str],
        sink: Sink,
        **options: Any,
    ) -> PublicSocket:
        """Connect and subscribe `kline.{interval}.{symbol}` for every pair (blocking: run it in a thread)."""
        sock = cls(url, sink, **options)
        try:
            for interval in intervals:
                # one subscribe request per interval; pybit records it and resends it after its own reconnects
                sock.kline_stream(interval=interval, symbol=list(symbols), callback=_ignore)
        except BaseException:
            sock.retire()
            raise
        return sock

    # -- what the feed uses ---------------------------------------------------------------------------

    def idle_seconds(self) -> float:
        """Seconds since the last frame from the server other than a pong (the watchdog's measure)."""
        return time.monotonic() - self._last_frame

    def topics_for(self, req_id: Any) -> list[str] | None:
        """The topics of the subscribe request `req_id` (pybit keeps the requests it sent, keyed by req_id)."""
        raw = self.subscriptions.get(req_id) if isinstance(req_id, str) else None
        if raw is None:
            return None
        try:
            return list(json.loads(raw)["args"])
        except (ValueError, KeyError, TypeError):
            return None

    def subscribe_topics(self, topics: Sequence[str]) -> None:
        """Subscribe more topics on this open connection (blocking: run it in a thread).

        Not pybit's subscribe(): that one waits in a loop for a connection and raises on a topic it saw before.
        The request is recorded in `subscriptions` before it is sent, so the reply finds its topics and pybit's
        own reconnects resend it; the dict is replaced, never mutated, because pybit's thread iterates it when it
        resubscribes."""
        if not topics:
            return
        req_id = str(uuid.uuid4())
        message = json.dumps({"op": "subscribe", "req_id": req_id, "args": list(topics)})
        self.subscriptions: dict[str, str] = {**self.subscriptions, req_id: message}
        for topic in topics:
            self.callback_directory[topic] = _ignore
        self._send(message)

    def unsubscribe_topics(self, topics: Sequence[str]) -> None:
        """Unsubscribe topics on this open connection, the others untouched (pybit's unsubscribe() resends a whole
        earlier request, every symbol it named). Forgotten first, so that no reconnect subscribes them again."""
        gone = set(topics)
        if not gone:
            return
        kept: dict[str, str] = {}
        for req_id, raw in self.subscriptions.items():
            args = [a for a in json.loads(raw)["args"] if a not in gone]
            if args:
                kept[req_id] = json.dumps({"op": "subscribe", "req_id": req_id, "args": args})
        self.subscriptions = kept
        for topic in gone:
            self.callback_directory.pop(topic, None)
        self._send(json.dumps({"op": "unsubscribe", "req_id": str(uuid.uuid4()), "args": sorted(gone)}))

    def topics(self) -> set[str]:
        """The topics this connection asks for (and pybit resends after its reconnects)."""
        return {a for raw in self.subscriptions.values() for a in json.loads(raw)["args"]}

    def _send(self, message: str) -> None:
        app = getattr(self, "ws", None)
        try:
            if app is None:
                raise ConnectionError("not connected")
            app.send(message)
        except Exception as exc:  # pybit is reconnecting: it resends `subscriptions` once connected
            log.info("a request waits for pybit's reconnect (%r): %s", exc, message[:120])

    @property
    def retired(self) -> bool:
        return self._retired

    def retire(self, close_timeout: float = 1.0, join_timeout: float = 5.0) -> None:
        """Close for good: no pybit reconnect, no more sink calls, the socket thread joined (bounded).

        Not pybit's exit(): it closes the socket from this thread while pybit's thread is blocked reading it;
        whichever thread wins the server's close reply, the other can sit in select() for ping_timeout.
        Here pybit's thread does the closing: we send the close frame and let the reply wake it; a server
        that never replies (silent) is cut off with a shutdown, which wakes it too."""
        self._retired = True
        self.handle_error = False  # pybit's on_error reconnects only while this is set
        self.exited = True  # and logs the disconnect as an error unless this is set
        self._stop_custom_ping_timer()
        app = getattr(self, "ws", None)
        thread = getattr(self, "wst", None)
        if thread is threading.current_thread():
            thread = None
        if app is not None:
            app.keep_running = False  # pybit's thread tears down at its next wake-up instead of reading on
            sock = app.sock
            try:
                if sock is not None and sock.connected:
                    sock.send_close()
                if thread is not None:
                    thread.join(close_timeout)
                sock = app.sock
                if sock is not None and (thread is None or thread.is_alive()):
                    sock.abort()
            except Exception:
                log.debug("closing a pybit socket failed", exc_info=True)
        if thread is not None:
            thread.join(join_timeout)
            if thread.is_alive():
                log.warning("a pybit socket thread did not stop within %.0fs", close_timeout + join_timeout)

    # -- pybit overrides ----------------------------------------------------------------------------------

    def _connect(self, url: str) -> None:
        if self._retired:
            return
        super()._connect(self._url)
        if self._retired:  # retired while pybit was reconnecting in its thread: close what it just opened
            try:
                self.exit()
            except Exception:
                log.debug("closing a retired pybit socket failed", exc_info=True)

    def _on_message(self, message: Any) -> None:
        try:
            if self._retired:
                return
            try:
                decoded: Any = json.loads(message)
            except ValueError:
                decoded = message  # the feed counts it as bad JSON
            if isinstance(decoded, dict) and (decoded.get("op") == "pong" or decoded.get("ret_msg") == "pong"):
                return  # answers to pybit's own pings prove nothing about the data flow
            self._last_frame = time.monotonic()
            self._sink(self, decoded)
        except Exception:
            self.sink_errors += 1
            if self.sink_errors == 1:  # the sink guards itself; this is the last line of defence, log it once
                log.exception("handing a Bybit message over failed")


class KlineClient:
    """Blocking public REST queries (klines, funding, instruments, tickers) through pybit HTTP (requests +
    time.sleep): call it via asyncio.to_thread."""

    def __init__(self, endpoint: str | None = None, *, timeout: float = 10.0) -> None:
        self._endpoint = (endpoint or MAINNET_REST).rstrip("/")
        self._timeout = timeout
        # one pybit HTTP (a requests.Session) per worker thread: Session is not documented as thread-safe
        self._local = threading.local()
        self._clients: list[HTTP] = []
        self._lock = threading.Lock()

    def _http(self) -> HTTP:
        http: HTTP | None = getattr(self._local, "http", None)
        if http is None:
            http = HTTP(testnet=False, timeout=self._timeout)
            # pybit builds `endpoint` as https://api.{domain}.{tld} in __post_init__ and has no scheme/port
            # option; every request path is f"{self.endpoint}/v5/...", so setting the attribute is the seam.
            http.endpoint = self._endpoint
            self._local.http = http
            with self._lock:
                self._clients.append(http)
        return http

    def get_kline(
        self, symbol: str, interval: str, *, start_ms: int, end_ms: int, limit: int
    ) -> tuple[list[Any], int | None]:
        """Rows `[start, open, high, low, close, volume, turnover]` (strings, newest first) with
        start_ms <= start <= end_ms, and the server's time in ms if it sent one."""
        reply = self._http().get_kline(
            category="linear", symbol=symbol, interval=interval, start=start_ms, end=end_ms, limit=limit
        )
        result = reply.get("result") if isinstance(reply, dict) else None
        rows = result.get("list") if isinstance(result, dict) else None
        if not isinstance(rows, list):
            raise ValueError(f"unexpected get_kline reply for {symbol} {interval}: {str(reply)[:200]}")
        server_ms = reply.get("time")
        return rows, server_ms if isinstance(server_ms, int) and not isinstance(server_ms, bool) else None

    def get_funding_history(self, symbol: str, *, end_ms: int, limit: int = FUNDING_PAGE) -> list[tuple[int, Decimal]]:
        """Up to `limit` settlements (ms, rate) at or before end_ms, oldest first (Bybit answers newest first;
        it refuses a startTime without an endTime, so a window is walked back by endTime)."""
        reply = self._http().get_funding_rate_history(category="linear", symbol=symbol, endTime=end_ms, limit=limit)
        result = reply.get("result") if isinstance(reply, dict) else None
        rows = result.get("list") if isinstance(result, dict) else None
        if not isinstance(rows, list):
            raise ValueError(f"unexpected funding history reply for {symbol}: {str(reply)[:200]}")
        out = []
        for row in rows:
            try:
                ms, rate = int(row["fundingRateTimestamp"]), Decimal(str(row["fundingRate"]))
            except (KeyError, TypeError, ValueError, ArithmeticError):
                raise ValueError(f"unreadable funding row for {symbol}: {str(row)[:120]}") from None
            if not rate.is_finite():
                raise ValueError(f"funding rate {rate} for {symbol} is not a number")
            out.append((ms, rate))
        return sorted(out)

    def get_instruments(self) -> list[dict[str, Any]]:
        """Every linear instrument (all statuses), walking get_instruments_info's cursor pages of 1000."""
        rows: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(100):  # > 500 linear symbols today: a few pages; the bound guards a cursor that loops
            page_of = {"cursor": cursor} if cursor else {}
            reply = self._http().get_instruments_info(category="linear", limit=1000, **page_of)
            result = reply.get("result") if isinstance(reply, dict) else None
            page = result.get("list") if isinstance(result, dict) else None
            if not isinstance(page, list):
                raise ValueError(f"unexpected instruments reply: {str(reply)[:200]}")
            rows += [r for r in page if isinstance(r, dict)]
            cursor = str(result.get("nextPageCursor") or "") if isinstance(result, dict) else ""
            if not cursor or not page:
                return rows
        raise ValueError("instruments-info kept returning a next page cursor")

    def get_tickers(self) -> list[dict[str, Any]]:
        """Every linear ticker (one request: the endpoint is not paginated)."""
        reply = self._http().get_tickers(category="linear")
        result = reply.get("result") if isinstance(reply, dict) else None
        rows = result.get("list") if isinstance(result, dict) else None
        if not isinstance(rows, list):
            raise ValueError(f"unexpected tickers reply: {str(reply)[:200]}")
        return [r for r in rows if isinstance(r, dict)]

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for http in clients:
            http.client.close()
