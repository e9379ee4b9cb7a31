"""BybitFeed: closed candles from Bybit's public linear kline stream, gap-free and without duplicates.

How it holds that promise:
- Symbols are sharded over several pybit WebSocket connections. pybit calls back in its own threads;
  the callback only hands the message to the event loop (call_soon_threadsafe), so one consumer, the
  `stream()` generator, sees every message in arrival order and owns all state.
- Only `confirm: true` klines are candles. For each (symbol, interval) the feed remembers the open time of
  the last candle it yielded and never yields one at or before it: duplicates from backfills, pybit
  resubscriptions or reconnect overlaps are dropped, and the order per key is strict.
- Each subscribe success (first connect, pybit's own reconnects, watchdog reconnects) triggers a REST
  backfill of everything that closed since the last yielded candle (or `last_seen`). The reply means the
  server is pushing again, so whatever closed before it is in REST and whatever closes after is pushed.
  A live candle that still leaves a hole (say the REST call failed) is preceded by a REST fill of the hole.
- A watchdog replaces a connection that has sent nothing for `silence_timeout` seconds with a fresh one.
- Symbols join and leave while streaming (`add_symbols`, `remove_symbols`: a universe refresh) by subscribe and
  unsubscribe requests on the open connections; a new connection is opened only when every shard is full, and a
  shard left without symbols is closed (an idle connection would look silent to the watchdog and be reopened
  forever). Pushes that were in flight for a symbol that just left are dropped quietly.
- Malformed messages are counted per kind in `errors`, logged once per kind per hour, and skipped. Candles
  that parse but are not sane (core/market/sanity.py: absurd values, or not closed yet by the clock) are
  counted per reason in `refused`, logged the same way, and skipped before they can move the dedupe mark:
  a candle from the future must not make the real ones behind it look like duplicates.

"Now" comes from the injected `clock` (which REST rows are closed). Timeouts use monotonic time inside the
adapter and asyncio; neither decides which candles exist, so the candle sequence stays clock-independent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from core.exchange.bybit_public import MAINNET_PUBLIC_LINEAR, KlineClient, PublicSocket, end_watchdog
from core.exchange.messages import BadMessage
from core.market.candle import INTERVAL_MS, MAX_MS, Candle, dt_to_ms, ms_to_dt, parse_interval
from core.market.sanity import Refusal, closed_by, describe, refusal

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (symbol, interval code)
REST_PAGE = 1000  # get_kline's maximum limit
MAX_ARGS_CHARS = 21_000  # Bybit's cap on the subscribed args of one linear connection
ERROR_LOG_EVERY = timedelta(hours=1)
_WEEK_OFFSET_MS = 4 * 86_400_000  # Bybit weeks open on Monday 00:00 UTC; 1970-01-01 was a Thursday
_STOP = object()


class RefusedCandle(BadMessage):
    """A well-formed candle that is not sane (core/market/sanity.py); counted per reason, not as an error."""

    def __init__(self, candle: Candle, reason: Refusal) -> None:
        super().__init__("refused", describe(candle, reason))
        self.candle = candle
        self.reason = reason


def candle_start_ms(ms: int, interval: str) -> int:
    """Open time (ms) of the `interval` candle that contains instant `ms`."""
    size = INTERVAL_MS[interval]
    offset = _WEEK_OFFSET_MS if interval == "W" else 0
    return (ms - offset) // size * size + offset


def topic_key(topic: Any) -> Key:
    """'kline.15.BTCUSDT' -> ('BTCUSDT', '15')."""
    parts = topic.split(".") if isinstance(topic, str) else []
    if len(parts) != 3 or parts[0] != "kline" or parts[1] not in INTERVAL_MS or not parts[2]:
        raise BadMessage("unknown_topic", repr(topic)[:80])
    return parts[2], parts[1]


def _ms(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_MS:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) < MAX_MS:
        return int(value)
    raise BadMessage("bad_value", f"{name}={value!r:.40}")


def _number(value: Any, name: str) -> float:
    # Bybit sends decimals as strings; accept numbers too, never bools. NaN, infinities and absurd
    # magnitudes parse here and are refused by the sanity rule, with its reason.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadMessage("bad_value", f"{name}={value!r:.40}")
    try:
        return float(value)
    except (ValueError, OverflowError):  # OverflowError: an int beyond float's range
        raise BadMessage("bad_value", f"{name}={value!r:.40}") from None


def _candle(symbol: str, interval: str, values: Sequence[Any], now: datetime | None) -> Candle:
    """`values`: start, open, high, low, close, volume, turnover (Bybit's order, as sent)."""
    start, o, h, lo, c, v, t = values
    candle = Candle(
        symbol=symbol,
        interval=interval,
        open_time=ms_to_dt(_ms(start, "start")),
        open=_number(o, "open"),
        high=_number(h, "high"),
        low=_number(lo, "low"),
        close=_number(c, "close"),
        volume=_number(v, "volume"),
        turnover=_number(t, "turnover"),
    )
    reason = refusal(candle, now)
    if reason is not None:
        raise RefusedCandle(candle, reason)
    return candle


_KLINE_FIELDS = ("start", "open", "high", "low", "close", "volume", "turnover")


def parse_kline(topic: str, entry: Any, *, now: datetime | None = None) -> Candle | None:
    """One entry of a `kline.{interval}.{symbol}` push -> the Candle if it closed, None while it is open.

    Raises RefusedCandle for a candle that is not sane, and (given `now`) for one that had not closed by then,
    whatever its `confirm` says."""
    symbol, interval = topic_key(topic)
    if not isinstance(entry, dict):
        raise BadMessage("bad_shape", f"kline entry is {type(entry).__name__}")
    confirm = entry.get("confirm")
    if confirm is False:
        return None
    if confirm is not True:
        raise BadMessage("missing_field" if confirm is None else "bad_value", f"confirm={confirm!r:.40}")
    missing = [name for name in _KLINE_FIELDS if name not in entry]
    if missing:
        raise BadMessage("missing_field", f"{topic}: {', '.join(missing)}")
    if str(entry.get("interval", interval)) != interval:
        raise BadMessage("bad_value", f"{topic}: interval {entry.get('interval')!r:.20}")
    return _candle(symbol, interval, [entry[name] for name in _KLINE_FIELDS], now)


def parse_rest_row(symbol: str, interval: str, row: Any) -> Candle:
    """A get_kline row `[start, open, high, low, close, volume, turnover]` -> Candle.

    Raises RefusedCandle for absurd values; whether it had closed is the caller's rule (REST also answers
    with the open candle, which is normal, not refused)."""
    if not isinstance(row, list | tuple) or len(row) < 7:
        raise BadMessage("bad_rest_row", f"{symbol} {interval}: {row!r:.80}")
    try:
        return _candle(symbol, interval, row[:7], None)
    except RefusedCandle:
        raise
    except BadMessage as exc:
        raise BadMessage("bad_rest_row", f"{symbol} {interval}: {exc.detail}") from None


def _args_chars(keys: Sequence[Key]) -> int:
    """The subscribed args of `keys` as JSON (quotes and a comma each): Bybit caps it per connection."""
    return sum(len(f"kline.{i}.{s}") + 3 for s, i in keys)


@dataclass
class _Shard:
    index: int
    symbols: tuple[str, ...]
    socket: PublicSocket | None = None
    retry_at: float = 0.0  # event-loop time before which a failed connect is not retried
    backoff: float = 1.0
    connects: int = 0
    keys: list[Key] = field(default_factory=list)


class BybitFeed:
    """The live Feed (core.market.candle.Feed): Bybit public linear klines, no API keys.

    Usage: `async for candle in feed.stream(): ...`; `await feed.history(symbol, interval, limit)` (before
    streaming it also sets where the stream resumes); `await feed.close()` stops every socket and ends the
    stream. `errors` counts malformed input and failures per kind, `refused` the candles that were not sane
    per reason; `stats()` tells how the feed is doing.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        intervals: Sequence[str] = ("15", "3"),
        *,
        clock: Callable[[], datetime],  # injected: core/ reads no wall clock of its own
        last_seen: Mapping[Key, datetime] | None = None,
        symbols_per_connection: int = 50,
        silence_timeout: float = 60.0,
        ws_url: str = MAINNET_PUBLIC_LINEAR,
        rest_url: str | None = None,
        ping_interval: float = 20.0,
        ping_timeout: float = 10.0,
        connect_retries: int = 3,
        rest_concurrency: int = 8,
        rest_timeout: float = 10.0,
        max_reconnect_backoff: float = 60.0,
    ) -> None:
        unique = list(dict.fromkeys(s.strip().upper() for s in symbols if s.strip()))
        if not unique:
            raise ValueError("BybitFeed needs at least one symbol")
        if symbols_per_connection < 1:
            raise ValueError("symbols_per_connection must be >= 1")
        self.intervals = tuple(dict.fromkeys(parse_interval(i) for i in intervals))
        self.symbols = tuple(unique)
        self._per_connection = symbols_per_connection
        self._left: set[Key] = set()  # keys unsubscribed while streaming: their late pushes are not errors
        self._clock = clock
        self._ws_url = ws_url
        self._silence_timeout = silence_timeout
        self._socket_options = {
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "retries": connect_retries,  # attempts per pybit connect; the watchdog retries after that
        }
        self._max_backoff = max_reconnect_backoff
        self._rest = KlineClient(rest_url, timeout=rest_timeout)
        self._rest_slots = asyncio.Semaphore(rest_concurrency)  # stays under Bybit's 600 requests / 5 s per IP

        self._shards = [
            _Shard(n, tuple(unique[i : i + symbols_per_connection]))
            for n, i in enumerate(range(0, len(unique), symbols_per_connection))
        ]
        for shard in self._shards:
            shard.keys = [(s, i) for i in self.intervals for s in shard.symbols]
            if (args := _args_chars(shard.keys)) > MAX_ARGS_CHARS:
                raise ValueError(
                    f"{args} characters of topics on one connection (Bybit allows {MAX_ARGS_CHARS}): "
                    "lower symbols_per_connection"
                )
        self._keys = {key for shard in self._shards for key in shard.keys}

        self.errors: Counter[str] = Counter()
        self.refused: Counter[Refusal] = Counter()
        self._logged_at: dict[str, datetime] = {}

        # the open time of the last candle yielded (or known to the caller) per key: the dedupe/resume mark
        self._last: dict[Key, datetime] = {}
        now = clock()
        for (symbol, interval), seen in (last_seen or {}).items():
            if seen.tzinfo is None:
                raise ValueError(f"last_seen[{symbol}, {interval}] must be timezone-aware (UTC)")
            key = (symbol.upper(), parse_interval(interval))
            if key not in self._keys:
                continue
            if not closed_by(seen, key[1], now):  # e.g. a future candle stored by an older version
                self.refused[Refusal.NOT_CLOSED] += 1
                self._report(f"refused {Refusal.NOT_CLOSED.value}", self.refused[Refusal.NOT_CLOSED],
                             f"last_seen {key[0]} {key[1]} {seen:%Y-%m-%d %H:%M} UTC is in the future: ignored")
                continue
            self._last[key] = seen
        self.duplicates = 0
        self.backfilled = 0
        self.reconnects = 0
        self.rest_requests = 0

        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._streaming = False
        self._closed = False
        self._closing = asyncio.Event()
        self._watchdog_task: asyncio.Task[None] | None = None
        self._opening: set[asyncio.Future[Any]] = set()
        self._sockets: set[PublicSocket] = set()  # every socket ever opened, so close() can retire them all

    # -- Feed protocol ----------------------------------------------------------------------------------

    async def stream(self) -> AsyncIterator[Candle]:
        """Closed candles, per (symbol, interval) strictly in time order and gap-free, until close()."""
        if self._streaming:
            raise RuntimeError("BybitFeed.stream() is already being consumed")
        self._streaming = True
        if self._closed:
            return
        await self._start()
        while not self._closed:
            item = await self._queue.get()
            if item is _STOP or self._closed:
                return
            try:
                candidates = await self._handle(*item)
            except RefusedCandle as exc:  # refused where parsed; this is a safety net
                self._refuse(exc)
                continue
            except BadMessage as exc:
                self._count(exc.kind, exc.detail)
                continue
            except Exception as exc:  # a bug or a surprise must cost one message, never the stream
                self._count("handler_error", repr(exc), exc)
                continue
            for candle in candidates:
                if self._accept(candle):
                    yield candle

    async def history(self, symbol: str, interval: str, limit: int) -> list[Candle]:
        """The latest `limit` closed candles, oldest first, from REST pages of <= 1000 walking back in time.

        Called before stream() starts, it also marks the newest one as seen, so the stream resumes right
        after it (the first subscribe backfills anything that closes in between)."""
        symbol, interval = symbol.upper(), parse_interval(interval)
        if limit <= 0:
            return []
        size = INTERVAL_MS[interval]
        # start at the open candle on purpose: the closed-only rule, not the window, is what keeps it out
        hi = candle_start_ms(self._now_ms(), interval)
        found: dict[int, Candle] = {}
        while len(found) < limit:
            want = min(REST_PAGE, limit - len(found) + 1)
            lo = hi - (want - 1) * size
            page = await self._closed_page(symbol, interval, lo, hi, want)
            if page is None:  # an empty page: nothing older exists (before the listing)
                break
            found.update((c.open_ms, c) for c in page)
            hi = lo - size
        candles = [found[ms] for ms in sorted(found)][-limit:]
        key = (symbol, interval)
        if candles and not self._started and key in self._keys:
            newest = candles[-1].open_time
            self._last[key] = max(self._last.get(key, newest), newest)
        return candles

    async def close(self) -> None:
        """Stop the watchdog, retire every pybit socket (threads joined) and end stream()."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        await end_watchdog(self._watchdog_task)
        if self._opening:
            await asyncio.wait(set(self._opening), timeout=30)
        sockets = list(self._sockets)
        for shard in self._shards:
            shard.socket = None
        if sockets:
            await asyncio.gather(*(asyncio.to_thread(s.retire) for s in sockets), return_exceptions=True)
        await asyncio.to_thread(self._rest.close)
        self._queue.put_nowait(_STOP)

    async def __aenter__(self) -> BybitFeed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stats(self) -> dict[str, int]:
        return {
            "shards": len(self._shards),
            "connected": sum(1 for s in self._shards if s.socket is not None),
            "connects": sum(s.connects for s in self._shards),
            "symbols": len(self.symbols),
            "reconnects": self.reconnects,
            "rest_requests": self.rest_requests,
            "backfilled": self.backfilled,
            "duplicates": self.duplicates,
            "errors": sum(self.errors.values()),
            "refused": sum(self.refused.values()),
        }

    @property
    def receiving(self) -> bool:
        """Market data arrives: some connection is up and heard from the server within the silence timeout."""
        return any(s.socket is not None and s.socket.idle_seconds() <= self._silence_timeout for s in self._shards)

    @property
    def shards(self) -> list[tuple[str, ...]]:
        """The symbols of each connection, in connection order (a shard emptied by removals is left out)."""
        return [s.symbols for s in self._shards if s.symbols]

    # -- the universe changing while streaming ------------------------------------------------------------

    async def add_symbols(self, symbols: Sequence[str], last_seen: Mapping[Key, datetime] | None = None) -> list[str]:
        """Subscribe `symbols` (those not streamed yet) on the open connections; returns the ones added.

        `last_seen`: where each new (symbol, interval) resumes (the newest candle of its warm-up history): the
        subscribe reply backfills from there, as at start. Shards with room take them first; a new connection
        is opened only for what no shard can take."""
        new = [s for s in dict.fromkeys(x.strip().upper() for x in symbols if x.strip()) if s not in self.symbols]
        if not new or self._closed:
            return []
        for (symbol, interval), seen in (last_seen or {}).items():
            key = (symbol.upper(), parse_interval(interval))
            if key[0] in new and closed_by(seen, key[1], self._clock()):
                self._last[key] = max(self._last.get(key, seen), seen)
        grown: dict[int, list[Key]] = {}
        opened: list[_Shard] = []
        for symbol in new:
            keys = [(symbol, i) for i in self.intervals]
            room = [sh for sh in self._shards if len(sh.symbols) < self._per_connection
                    and _args_chars(sh.keys + keys) <= MAX_ARGS_CHARS]
            # a shard that carries symbols already (its connection is open) before an emptied one (closed)
            shard = next((sh for sh in room if sh.symbols or sh in opened), None)
            if shard is None:
                shard = room[0] if room else _Shard(len(self._shards), ())
                if not room:
                    self._shards.append(shard)
                opened.append(shard)
            shard.symbols += (symbol,)
            shard.keys = shard.keys + keys
            self._left.difference_update(keys)
            self._keys.update(keys)
            if shard not in opened:
                grown.setdefault(shard.index, []).extend(keys)
        self.symbols = (*self.symbols, *new)
        if self._started:
            for index, keys in grown.items():
                sock = self._shards[index].socket
                if sock is not None:  # else the watchdog's reconnect opens it with the shard's symbols
                    await asyncio.to_thread(sock.subscribe_topics, [f"kline.{i}.{s}" for s, i in keys])
            await asyncio.gather(*(self._connect(shard) for shard in opened))
        log.info("bybit feed: %d symbol(s) added (%s)", len(new), ", ".join(new))
        return new

    async def remove_symbols(self, symbols: Sequence[str]) -> list[str]:
        """Unsubscribe `symbols` on their connections (the others keep streaming); returns the ones removed."""
        gone = {s.strip().upper() for s in symbols} & set(self.symbols)
        if not gone or self._closed:
            return []
        for shard in self._shards:
            keys = [k for k in shard.keys if k[0] in gone]
            if not keys:
                continue
            shard.symbols = tuple(s for s in shard.symbols if s not in gone)
            shard.keys = [k for k in shard.keys if k[0] not in gone]
            sock = shard.socket
            if sock is None:
                continue
            if shard.symbols:
                await asyncio.to_thread(sock.unsubscribe_topics, [f"kline.{i}.{s}" for s, i in keys])
            else:  # nothing left to carry: closed, not left idle (see the module's docstring)
                shard.socket = None
                self._sockets.discard(sock)
                await asyncio.to_thread(sock.retire)
        for key in [k for k in self._keys if k[0] in gone]:
            self._keys.discard(key)
            self._left.add(key)
            self._last.pop(key, None)  # a symbol that comes back warms up afresh
        self.symbols = tuple(s for s in self.symbols if s not in gone)
        log.info("bybit feed: %d symbol(s) removed (%s)", len(gone), ", ".join(sorted(gone)))
        return sorted(gone)

    # -- connections ------------------------------------------------------------------------------------

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        await asyncio.gather(*(self._connect(shard) for shard in self._shards if shard.symbols))
        self._watchdog_task = asyncio.create_task(self._watchdog(), name="bybit-feed-watchdog")

    def _from_thread(self, shard: int, sock: PublicSocket, message: Any) -> None:
        """pybit's callback, in pybit's thread. An exception escaping here would end pybit's stream for good,
        so it only hands the message to the loop and swallows everything."""
        try:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, (shard, sock, message))
        except RuntimeError:
            pass  # the loop is closed: the feed is shutting down and nobody is listening
        except Exception:
            log.exception("could not hand a Bybit message to the event loop")

    def _open_socket(self, shard: _Shard) -> PublicSocket:
        # runs in a worker thread; registration happens here so that close() finds sockets whose opening
        # outlived the coroutine that asked for them
        sock = PublicSocket.open(
            self._ws_url, shard.symbols, self.intervals, partial(self._from_thread, shard.index), **self._socket_options
        )
        self._sockets.add(sock)
        if self._closed:
            sock.retire()
        return sock

    async def _connect(self, shard: _Shard) -> None:
        if self._closed:
            return
        assert self._loop is not None
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_socket, shard))
        self._opening.add(opening)
        try:
            sock = await opening
        except Exception as exc:
            shard.retry_at = self._loop.time() + shard.backoff
            shard.backoff = min(shard.backoff * 2, self._max_backoff)
            self._count("connect_failed", f"shard {shard.index}: {exc!r}")
            return
        finally:
            self._opening.discard(opening)
        if self._closed or sock.retired:
            return
        # symbols that joined the shard while it was connecting: the open subscribed the shard as it was then
        wanted = {f"kline.{i}.{s}" for s, i in shard.keys}
        if missing := sorted(wanted - sock.topics()):
            await asyncio.to_thread(sock.subscribe_topics, missing)
        if extra := sorted(sock.topics() - wanted):
            await asyncio.to_thread(sock.unsubscribe_topics, extra)
        shard.socket = sock
        shard.backoff = 1.0
        shard.connects += 1
        log.info("bybit feed: shard %d connected (%d symbols)", shard.index, len(shard.symbols))

    async def _reconnect(self, shard: _Shard) -> None:
        old, shard.socket = shard.socket, None
        if old is not None:
            self.reconnects += 1
            self._sockets.discard(old)
            log.warning("bybit feed: shard %d silent for %.1fs, reconnecting", shard.index, old.idle_seconds())
            await asyncio.to_thread(old.retire)
        await self._connect(shard)

    async def _watchdog(self) -> None:
        assert self._loop is not None
        tick = max(0.05, min(1.0, self._silence_timeout / 4))
        while not self._closed:
            try:
                await asyncio.wait_for(self._closing.wait(), tick)
                return
            except TimeoutError:
                pass
            now = self._loop.time()
            due = [
                shard
                for shard in self._shards
                if shard.symbols and (
                    (shard.socket is None and now >= shard.retry_at)
                    or (shard.socket is not None and shard.socket.idle_seconds() > self._silence_timeout)
                )
            ]
            results = await asyncio.gather(*(self._reconnect(shard) for shard in due), return_exceptions=True)
            for shard, result in zip(due, results, strict=True):
                if isinstance(result, Exception):
                    self._count("reconnect_failed", f"shard {shard.index}: {result!r}", result)

    # -- messages ---------------------------------------------------------------------------------------

    async def _handle(self, shard: int, sock: PublicSocket, message: Any) -> list[Candle]:
        """Candidates to yield, in order; `_accept` then drops what is not newer than the last yield."""
        if isinstance(message, str | bytes):
            raise BadMessage("bad_json", repr(message)[:80])
        if not isinstance(message, dict):
            raise BadMessage("bad_shape", f"a JSON {type(message).__name__}, not an object")
        if "topic" not in message:
            if message.get("op") == "subscribe":
                return await self._subscribed(shard, sock, message)
            if "op" in message:
                return []  # other command replies (unsubscribe, auth) carry no data for us
            raise BadMessage("bad_shape", f"neither topic nor op: {str(message)[:80]}")
        topic = message["topic"]
        if topic_key(topic) not in self._keys:
            if topic_key(topic) in self._left:
                return []  # pushed before the unsubscribe took effect: expected, not an error
            raise BadMessage("unknown_topic", repr(topic)[:80])
        data = message.get("data")
        if not isinstance(data, list):
            raise BadMessage("bad_shape" if "data" in message else "missing_field", f"{topic}: data")
        now = self._clock()
        closed: list[Candle] = []
        for entry in data:
            try:
                candle = parse_kline(topic, entry, now=now)
            except RefusedCandle as exc:  # this entry only: the others in the push still count
                self._refuse(exc)
                continue
            if candle is not None:
                closed.append(candle)
        out: list[Candle] = []
        last = self._last.get(topic_key(topic))
        for candle in sorted(closed, key=lambda c: c.open_time):
            out += await self._live(candle, last)
            last = candle.open_time if last is None else max(last, candle.open_time)
        return out

    async def _subscribed(self, shard: int, sock: PublicSocket, reply: dict[str, Any]) -> list[Candle]:
        if reply.get("success") is not True:
            raise BadMessage("subscribe_failed", f"shard {shard}: {reply.get('ret_msg')!r:.120}")
        topics = sock.topics_for(reply.get("req_id"))
        keys = [topic_key(t) for t in topics] if topics else self._shards[shard].keys
        return await self._backfill([k for k in keys if k in self._keys])

    async def _live(self, candle: Candle, last: datetime | None) -> list[Candle]:
        """A pushed closed candle, preceded by REST candles if it leaves a hole after `last`."""
        size = INTERVAL_MS[candle.interval]
        if last is None or candle.open_ms <= dt_to_ms(last) + size:
            return [candle]  # the next one, or a duplicate that _accept drops
        try:  # a hole the reconnect backfill did not cover (e.g. its REST call failed): fill it first
            first, upto = dt_to_ms(last) + size, candle.open_ms - size
            filled = await self._fetch_closed(candle.symbol, candle.interval, first, upto)
        except Exception as exc:
            self._count("backfill_failed", f"{candle.symbol} {candle.interval}: {exc!r}")
            filled = []
        self.backfilled += len(filled)
        return [*filled, candle]

    async def _backfill(self, keys: list[Key]) -> list[Candle]:
        """Every candle closed since the last one yielded, for each key that has a last one."""
        now_ms = self._now_ms()
        jobs: list[tuple[Key, int]] = []
        for key in keys:
            last = self._last.get(key)
            if last is None:
                continue
            first = dt_to_ms(last) + INTERVAL_MS[key[1]]
            if first <= candle_start_ms(now_ms, key[1]) - INTERVAL_MS[key[1]]:  # at least one closed since
                jobs.append((key, first))
        results = await asyncio.gather(
            *(self._fetch_closed(symbol, interval, first, now_ms) for (symbol, interval), first in jobs),
            return_exceptions=True,
        )
        out: list[Candle] = []
        for (key, _), result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                self._count("backfill_failed", f"{key[0]} {key[1]}: {result!r}")
                continue
            out += result
        self.backfilled += len(out)
        return out

    def _accept(self, candle: Candle) -> bool:
        key = (candle.symbol, candle.interval)
        last = self._last.get(key)
        if last is not None and candle.open_time <= last:
            self.duplicates += 1
            return False
        self._last[key] = candle.open_time
        return True

    # -- REST ---------------------------------------------------------------------------------------------

    async def _fetch_closed(self, symbol: str, interval: str, first_ms: int, last_ms: int) -> list[Candle]:
        """Closed candles opening in [first_ms, last_ms], oldest first, in windows of <= 1000 candles.

        Windows, not "give me 1000 from here": the window bounds the answer whichever end Bybit counts from."""
        size = INTERVAL_MS[interval]
        found: dict[int, Candle] = {}
        lo = first_ms
        while lo <= last_ms:
            hi = min(last_ms, lo + (REST_PAGE - 1) * size)
            found.update((c.open_ms, c) for c in await self._closed_page(symbol, interval, lo, hi, REST_PAGE) or [])
            lo = hi + size
        return [found[ms] for ms in sorted(found)]

    async def _closed_page(self, symbol: str, interval: str, lo: int, hi: int, limit: int) -> list[Candle] | None:
        """One get_kline page reduced to closed candles opening in [lo, hi]; None if the page was empty."""
        async with self._rest_slots:
            self.rest_requests += 1
            rows, server_ms = await asyncio.to_thread(
                self._rest.get_kline, symbol, interval, start_ms=lo, end_ms=hi, limit=limit
            )
        if not rows:
            return None
        # closed = ended by now; the server's clock (when sent) caps ours, so a local clock running ahead
        # cannot pass off the still-open newest row as closed (a wrong candle would then shadow the real one)
        now_ms = self._now_ms() if server_ms is None else min(self._now_ms(), server_ms)
        size = INTERVAL_MS[interval]
        page: list[Candle] = []
        for row in rows:
            try:
                candle = parse_rest_row(symbol, interval, row)
            except RefusedCandle as exc:
                self._refuse(exc)
                continue
            except BadMessage as exc:
                self._count(exc.kind, exc.detail)
                continue
            if lo <= candle.open_ms <= hi and candle.open_ms + size <= now_ms:
                page.append(candle)
        return page

    # -- bookkeeping ------------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return dt_to_ms(self._clock())

    def _count(self, kind: str, detail: str, exc: BaseException | None = None) -> None:
        """Count every occurrence in `errors`; the log is rate-limited by `_report`."""
        self.errors[kind] += 1
        self._report(kind, self.errors[kind], detail, exc)

    def _refuse(self, exc: RefusedCandle) -> None:
        """Count a candle that was not sane in `refused`, per reason; logged like an error kind."""
        self.refused[exc.reason] += 1
        self._report(f"refused {exc.reason.value}", self.refused[exc.reason], exc.detail)

    def _report(self, kind: str, so_far: int, detail: str, exc: BaseException | None = None) -> None:
        """Log a kind at most once an hour so a flood cannot drown the log."""
        now = self._clock()
        logged = self._logged_at.get(kind)
        if logged is None or now - logged >= ERROR_LOG_EVERY or now < logged:
            self._logged_at[kind] = now
            log.warning(
                "bybit feed: %s (%d so far; next report of this kind in an hour): %s",
                kind,
                so_far,
                detail,
                exc_info=exc,
            )
