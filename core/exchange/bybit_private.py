"""Bybit v5 private data: wire parsers (REST rows and stream entries) and the private WebSocket stream.

The parsers turn Bybit's string-typed order / execution / position rows into the Decimal dataclasses of
core/exchange/broker.py; the REST side (bybit_broker.py) and the stream share them.

The stream subscribes the all-in-one private topics `order`, `execution` and `position` (pybit's
order_stream / execution_stream / position_stream; never mixed with the `.linear` variants, which Bybit
forbids) and keeps only category "linear". It delivers each fact once: an execution reported twice (same
symbol + seq, or execId when seq is missing) is one Fill, and an order that reports a terminal status twice
(a cancel racing a fill reports "Filled" twice) is one event. A message it cannot read is counted and skipped.

Executions are keyed on (symbol, seq, execId), not (symbol, seq) alone: Bybit documents that "the seq will be
the same when conclude multiple transactions at the same time" (one market order sweeping several makers), so
seq alone would swallow real fills; a repeated delivery repeats all three.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from pybit.unified_trading import WebSocket

from core.exchange.broker import TERMINAL_STATUSES, Fill, FundingFee, OrderSide, OrderState, Position, Side
from core.exchange.bybit_public import PublicSocket, Sink, end_watchdog
from core.exchange.messages import BadMessage
from core.market.candle import MAX_MS, ms_to_dt

log = logging.getLogger(__name__)

MAINNET_PRIVATE = "wss://stream.bybit.com/v5/private"
TESTNET_PRIVATE = "wss://stream-testnet.bybit.com/v5/private"
DEMO_PRIVATE = "wss://stream-demo.bybit.com/v5/private"

PrivateEvent = Fill | FundingFee | OrderState | Position

OPEN_STATUSES = frozenset({"Created", "New", "PartiallyFilled", "Untriggered", "Triggered", "Active"})
ERROR_LOG_EVERY = timedelta(hours=1)
_LINK_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
_STOP = object()


def private_url(*, testnet: bool, demo: bool) -> str:
    if demo:
        return "wss://stream-demo-testnet.bybit.com/v5/private" if testnet else DEMO_PRIVATE
    return TESTNET_PRIVATE if testnet else MAINNET_PRIVATE


def valid_link_id(link: str) -> bool:
    """Bybit's orderLinkId rule: 1..36 characters of [A-Za-z0-9_-]."""
    return bool(_LINK_ID.match(link))


# -- parsing ------------------------------------------------------------------------------------------------


def _field(row: dict[str, Any], name: str) -> Any:
    if name not in row:
        raise BadMessage("missing_field", name)
    return row[name]


def dec(value: Any, name: str) -> Decimal:
    """A finite Decimal from Bybit's string (numbers accepted; bools, NaN and infinities refused)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadMessage("bad_value", f"{name}={value!r:.40}")
    try:
        out = Decimal(value) if isinstance(value, str | int) else Decimal(repr(value))
    except (InvalidOperation, ValueError):
        raise BadMessage("bad_value", f"{name}={value!r:.40}") from None
    if not out.is_finite():
        raise BadMessage("bad_value", f"{name}={value!r:.40}")
    return out


def dec_or_zero(value: Any, name: str) -> Decimal:
    """Bybit sends "" for "not applicable"; for amounts that means zero."""
    return Decimal(0) if value in ("", None) else dec(value, name)


def price_or_none(value: Any, name: str) -> Decimal | None:
    """Bybit writes an absent price (TP, SL, liquidation, average) as "" or "0"."""
    if value in ("", None):
        return None
    out = dec(value, name)
    return out if out > 0 else None


def ms_time(value: Any, name: str) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_MS:
        return ms_to_dt(value)
    if isinstance(value, str) and value.isdigit() and int(value) < MAX_MS:
        return ms_to_dt(int(value))
    raise BadMessage("bad_value", f"{name}={value!r:.40}")


def _optional_time(row: dict[str, Any], name: str) -> datetime | None:
    value = row.get(name)
    return None if value in ("", None, "0", 0) else ms_time(value, name)


def _order_side(value: Any) -> OrderSide:
    if value == "Buy":
        return "Buy"
    if value == "Sell":
        return "Sell"
    raise BadMessage("bad_value", f"side={value!r:.20}")


def _text(row: dict[str, Any], name: str) -> str:
    value = _field(row, name)
    if not isinstance(value, str):
        raise BadMessage("bad_value", f"{name}={value!r:.40}")
    return value


def parse_order(row: Any) -> OrderState:
    """An order row (get_open_orders / get_order_history / the `order` topic)."""
    if not isinstance(row, dict):
        raise BadMessage("bad_shape", f"order {type(row).__name__}")
    link = row.get("orderLinkId") or ""
    reduce_only = row.get("reduceOnly", False)
    reject = row.get("rejectReason")  # e.g. EC_PostOnlyWillTakeLiquidity on a cancelled post-only order
    return OrderState(
        order_link_id=link if isinstance(link, str) else str(link),
        exchange_order_id=_text(row, "orderId") or None,
        symbol=_text(row, "symbol"),
        side=_order_side(_field(row, "side")),
        qty=dec_or_zero(_field(row, "qty"), "qty"),
        status=_text(row, "orderStatus"),
        filled_qty=dec_or_zero(row.get("cumExecQty"), "cumExecQty"),
        avg_price=price_or_none(row.get("avgPrice"), "avgPrice"),
        fee=dec_or_zero(row.get("cumExecFee"), "cumExecFee"),
        reduce_only=reduce_only is True or reduce_only == "true",
        created_at=_optional_time(row, "createdTime"),
        updated_at=_optional_time(row, "updatedTime"),
        reject_reason=reject if isinstance(reject, str) and reject not in ("", "EC_NoError") else None,
    )


def parse_execution(row: Any) -> Fill:
    """An execution row (get_executions / the `execution` topic)."""
    if not isinstance(row, dict):
        raise BadMessage("bad_shape", f"execution {type(row).__name__}")
    seq = row.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int | str)):
        raise BadMessage("bad_value", f"seq={seq!r:.40}")
    if isinstance(seq, str):
        seq = int(seq) if seq.isdigit() else None
    stop_type = row.get("stopOrderType") or None
    link = row.get("orderLinkId") or None
    exec_id = _text(row, "execId")
    if not exec_id:
        raise BadMessage("bad_value", "execId is empty")
    return Fill(
        exec_id=exec_id,
        order_link_id=link if isinstance(link, str) else None,
        exchange_order_id=row.get("orderId") or None,
        symbol=_text(row, "symbol"),
        side=_order_side(_field(row, "side")),
        qty=dec(_field(row, "execQty"), "execQty"),
        price=dec(_field(row, "execPrice"), "execPrice"),
        fee=dec_or_zero(row.get("execFee"), "execFee"),
        time=ms_time(_field(row, "execTime"), "execTime"),
        seq=seq,
        # executions carry no reduceOnly flag; a fill that closed position size is the reducing kind
        reduce_only=dec_or_zero(row.get("closedSize"), "closedSize") > 0,
        stop_order_type=None if stop_type in ("UNKNOWN", "None") else stop_type,
        order_type="Limit" if row.get("orderType") == "Limit" else "Market",
    )


def is_funding(row: Any) -> bool:
    """A funding settlement, not a trade: Bybit reports both as execution rows."""
    return isinstance(row, dict) and row.get("execType") == "Funding"


def parse_funding(row: Any) -> FundingFee:
    """A funding execution row: execFee is what the account paid (negative: received)."""
    if not isinstance(row, dict):
        raise BadMessage("bad_shape", f"execution {type(row).__name__}")
    exec_id = _text(row, "execId")
    if not exec_id:
        raise BadMessage("bad_value", "execId is empty")
    rate = row.get("feeRate")
    return FundingFee(exec_id=exec_id, symbol=_text(row, "symbol"), fee=dec(_field(row, "execFee"), "execFee"),
                      time=ms_time(_field(row, "execTime"), "execTime"),
                      rate=dec(rate, "feeRate") if rate not in (None, "") else None)


def parse_position(row: Any, previous_side: Side | None = None) -> Position:
    """A position row: REST says avgPrice, the stream says entryPrice. A flat position (size 0, side "")
    becomes qty 0 with the side it had (`previous_side`, else "long")."""
    if not isinstance(row, dict):
        raise BadMessage("bad_shape", f"position {type(row).__name__}")
    size = dec_or_zero(_field(row, "size"), "size")
    raw_side = row.get("side")
    side: Side
    if raw_side == "Buy":
        side = "long"
    elif raw_side == "Sell":
        side = "short"
    elif size == 0:
        side = previous_side or "long"
    else:
        raise BadMessage("bad_value", f"side={raw_side!r:.20} with size {size}")
    entry = row.get("avgPrice", row.get("entryPrice"))
    return Position(
        symbol=_text(row, "symbol"),
        side=side,
        qty=size,
        entry_price=dec_or_zero(entry, "avgPrice"),
        leverage=dec_or_zero(row.get("leverage"), "leverage"),
        stop_loss=price_or_none(row.get("stopLoss"), "stopLoss"),
        take_profit=price_or_none(row.get("takeProfit"), "takeProfit"),
        unrealized_pnl=dec_or_zero(row.get("unrealisedPnl"), "unrealisedPnl"),
        liquidation_price=price_or_none(row.get("liqPrice"), "liqPrice"),
        mark_price=price_or_none(row.get("markPrice"), "markPrice"),
        opened_at=_optional_time(row, "createdTime"),
    )


# -- the socket ---------------------------------------------------------------------------------------------


class _PrivateChannel(WebSocket):
    """Sits between PublicSocket and pybit's WebSocket in PrivateSocket's MRO (see there)."""

    _credentials: tuple[str, str]

    def __init__(self, channel_type: str, **kwargs: Any) -> None:
        api_key, api_secret = self._credentials
        super().__init__(channel_type="private", api_key=api_key, api_secret=api_secret, **kwargs)


class PrivateSocket(PublicSocket, _PrivateChannel):
    """PublicSocket's URL seam, never-raising message path and clean retire(), on pybit's private channel.

    PublicSocket.__init__ hands pybit a fixed public channel; in this class's MRO its `super().__init__` reaches
    _PrivateChannel, which swaps in channel_type "private" and the keys. pybit then authenticates on every
    (re)connect exactly as it does for Bybit ({"op": "auth", "args": [key, expires, HMAC("GET/realtime" +
    expires)]}) before resending the subscriptions. The keys are held by pybit only; nothing here logs them."""

    def __init__(self, url: str, sink: Sink, *, api_key: str, api_secret: str, **options: Any) -> None:
        self._credentials = (api_key, api_secret)
        super().__init__(url, sink, **options)

    @classmethod
    def open_private(
        cls, url: str, sink: Sink, *, api_key: str, api_secret: str, **options: Any
    ) -> PrivateSocket:
        """Connect, authenticate and subscribe order, execution and position (blocking: run it in a thread)."""
        sock = cls(url, sink, api_key=api_key, api_secret=api_secret, **options)
        try:
            # pybit's all-in-one topics: one subscribe request each, resent by pybit after its own reconnects
            sock.order_stream(callback=_ignore)
            sock.execution_stream(callback=_ignore)
            sock.position_stream(callback=_ignore)
        except BaseException:
            sock.retire()
            raise
        return sock


def _ignore(_message: Any) -> None:
    """pybit wants a per-topic callback; PublicSocket._on_message hands every frame to the sink instead."""


# -- the stream ---------------------------------------------------------------------------------------------


class _Seen:
    """A bounded set: the most recent `size` keys."""

    def __init__(self, size: int) -> None:
        self._keys: OrderedDict[Hashable, None] = OrderedDict()
        self._size = size

    def add(self, key: Hashable) -> bool:
        """True when the key is new."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True


class PrivateStream:
    """Parsed, deduplicated private events (Fill, OrderState, Position) as an async iterator.

    start() connects (pybit in its own threads); pybit's callback only hands each frame to the event loop with
    call_soon_threadsafe; parsing and deduplication run on the loop and never raise. `events()` has one consumer
    and ends after close(). A Position with qty 0 means the symbol is flat.

    pybit reconnects (and re-authenticates, and resubscribes) after a dropped connection by itself, but gives up
    after its retries and never tells anyone. A watchdog replaces a socket that has stayed disconnected for
    `reconnect_after` seconds. It watches the connection, not the traffic: a private stream is legitimately silent
    for hours. Either way events may have been missed: `auths` counts (re)authentications, and after one the owner
    should fetch executions since its last fill over REST."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str,
        api_secret: str,
        clock: Callable[[], datetime],
        memory: int = 20_000,
        socket_options: dict[str, Any] | None = None,
        watch_interval: float = 5.0,
        reconnect_after: float = 30.0,
    ) -> None:
        self.url = url
        self._credentials = (api_key, api_secret)
        self._clock = clock
        self._socket_options = socket_options or {}
        self._watch_interval = watch_interval
        self._reconnect_after = reconnect_after
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._socket: PrivateSocket | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._closed = False
        self.reconnects = 0  # sockets replaced by the watchdog
        self._seen_fills = _Seen(memory)
        self._orders: OrderedDict[str, tuple[str, Decimal, Decimal | None]] = OrderedDict()
        self._memory = memory
        self._position_seq: dict[str, int] = {}
        self._position_side: dict[str, Side] = {}
        self._last_logged: dict[str, datetime] = {}
        self.errors: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()  # per kind: execution, order, position
        self.auths = 0  # successful auth replies: more than one means pybit reconnected (fetch missed fills)
        self.delivered = 0

    async def start(self) -> None:
        """Connect, authenticate, subscribe (raises if the first connection fails), then watch the connection."""
        if self._socket is not None or self._closed:
            return
        self._loop = asyncio.get_running_loop()
        sock = await asyncio.to_thread(self._open)
        if self._closed:  # closed while connecting
            await asyncio.to_thread(sock.retire)
            return
        self._socket = sock
        self._watchdog_task = asyncio.create_task(self._watchdog(), name="bybit-private-watchdog")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        await end_watchdog(self._watchdog_task)
        sock, self._socket = self._socket, None
        if sock is not None:
            await asyncio.to_thread(sock.retire)
        self._queue.put_nowait(_STOP)

    def _open(self) -> PrivateSocket:
        key, secret = self._credentials
        return PrivateSocket.open_private(
            self.url, self._from_thread, api_key=key, api_secret=secret, **self._socket_options
        )

    async def _watchdog(self) -> None:
        assert self._loop is not None
        down_since: float | None = None
        while not self._closed:
            try:
                await asyncio.wait_for(self._closing.wait(), self._watch_interval)
                return
            except TimeoutError:
                pass
            sock = self._socket
            if sock is not None and sock.is_connected():
                down_since = None
                continue
            now = self._loop.time()
            if down_since is None:
                down_since = now  # pybit's own reconnect gets the first chance
            if now - down_since < self._reconnect_after:
                continue
            self._socket = None
            if sock is not None:
                await asyncio.to_thread(sock.retire)
            try:
                fresh = await asyncio.to_thread(self._open)
            except Exception as exc:
                self._count("connect_failed", repr(exc)[:200])
                down_since = self._loop.time()
                continue
            if self._closed:
                await asyncio.to_thread(fresh.retire)
                return
            self._socket = fresh
            self.reconnects += 1
            down_since = None
            log.warning("bybit private stream: reconnected by the watchdog (%d so far)", self.reconnects)

    async def events(self) -> AsyncIterator[PrivateEvent]:
        while True:
            item = await self._queue.get()
            if item is _STOP:
                return
            yield item

    @property
    def connected(self) -> bool:
        return self._socket is not None and self._socket.is_connected()

    # -- pybit's thread -----------------------------------------------------------------------------------

    def _from_thread(self, _sock: PublicSocket, message: Any) -> None:
        """pybit's callback: an exception here would end pybit's stream for good, so hand over and swallow."""
        try:
            if self._loop is not None and not self._closed:
                self._loop.call_soon_threadsafe(self._on_message, message)
        except RuntimeError:
            pass  # the loop is closed: shutting down
        except Exception:
            log.exception("could not hand a private Bybit message to the event loop")

    # -- the loop ---------------------------------------------------------------------------------------

    def _on_message(self, message: Any) -> None:
        try:
            for event in self._parse(message):
                self.delivered += 1
                self._queue.put_nowait(event)
        except BadMessage as exc:
            self._count(exc.kind, str(exc))
        except Exception as exc:  # a bug or a surprise costs one message, never the stream
            self._count("handler_error", repr(exc))

    def _parse(self, message: Any) -> list[PrivateEvent]:
        if isinstance(message, str):
            raise BadMessage("bad_json", message[:60])
        if not isinstance(message, dict):
            raise BadMessage("bad_shape", type(message).__name__)
        op = message.get("op")
        if op is not None:
            self._reply(op, message)
            return []
        topic = message.get("topic")
        data = message.get("data")
        if not isinstance(topic, str) or not isinstance(data, list):
            raise BadMessage("bad_shape", f"topic={topic!r:.40} data={type(data).__name__}")
        kind = topic.split(".", 1)[0]
        handler = {"order": self._order, "execution": self._execution, "position": self._position}.get(kind)
        if handler is None or topic not in (kind, f"{kind}.linear"):
            raise BadMessage("unknown_topic", topic[:60])
        events: list[PrivateEvent] = []
        for entry in data:
            try:
                if not isinstance(entry, dict):
                    raise BadMessage("bad_shape", f"{kind} entry {type(entry).__name__}")
                if entry.get("category", "linear") != "linear":
                    continue  # the all-in-one topics carry every category; this desk trades linear only
                event = handler(entry)
            except BadMessage as exc:  # one bad entry does not cost its neighbours
                self._count(exc.kind, str(exc))
                continue
            if event is not None:
                events.append(event)
        return events

    def _reply(self, op: Any, message: dict[str, Any]) -> None:
        if message.get("success") is False:
            kind = "auth_failed" if op == "auth" else "subscribe_failed" if op == "subscribe" else "op_failed"
            self._count(kind, str(message.get("ret_msg", ""))[:120], always=True)
        elif op == "auth" and message.get("success") is True:
            self.auths += 1
            if self.auths > 1:
                log.warning("bybit private stream re-authenticated (reconnect %d): fills may have been missed",
                            self.auths - 1)

    def _execution(self, entry: dict[str, Any]) -> Fill | FundingFee | None:
        event: Fill | FundingFee
        if is_funding(entry):  # a settlement on the position, never a fill
            event = parse_funding(entry)
            key: Hashable = ("funding", event.exec_id)
        else:
            event = parse_execution(entry)
            key = (event.symbol, event.seq, event.exec_id)
        if not self._seen_fills.add(key):
            self.duplicates["execution"] += 1
            return None
        return event

    def _order(self, entry: dict[str, Any]) -> OrderState | None:
        state = parse_order(entry)
        key = state.exchange_order_id or state.order_link_id
        if not key:
            raise BadMessage("missing_field", "orderId")
        previous = self._orders.get(key)
        current = (state.status, state.filled_qty, state.avg_price)
        # after a terminal status an order has nothing new to say (a double "Filled" is a cancel racing a
        # fill); an update identical in status, filled qty and price is a repeat
        if previous is not None and (previous[0] in TERMINAL_STATUSES or previous == current):
            self.duplicates["order"] += 1
            return None
        self._orders[key] = current
        self._orders.move_to_end(key)
        if len(self._orders) > self._memory:
            self._orders.popitem(last=False)
        return state

    def _position(self, entry: dict[str, Any]) -> Position | None:
        symbol = entry.get("symbol")
        position = parse_position(entry, self._position_side.get(symbol) if isinstance(symbol, str) else None)
        seq = entry.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
            last = self._position_seq.get(position.symbol)
            if last is not None and seq <= last:  # a repeat or an older update arriving late
                self.duplicates["position"] += 1
                return None
            self._position_seq[position.symbol] = seq
        if position.qty > 0:
            self._position_side[position.symbol] = position.side
        return position

    def _count(self, kind: str, detail: str, *, always: bool = False) -> None:
        self.errors[kind] += 1
        now = self._clock()
        last = self._last_logged.get(kind)
        if always or last is None or now - last >= ERROR_LOG_EVERY:
            self._last_logged[kind] = now
            log.warning("bybit private stream: %s (%d so far): %s", kind, self.errors[kind], detail)
