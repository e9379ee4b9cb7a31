"""BybitBroker: the Broker protocol on Bybit v5 USDT perpetuals (category "linear") through pybit.

Account settings (`prepare_symbol`, at a bot's start and for a symbol added later): the position mode is read
from /v5/position/list (one row with positionIdx 0: one-way; rows with 1 and 2: hedge) and every order, close and
stop carries the matching positionIdx; the margin mode is set with /v5/account/set-margin-mode, which on a
unified trading account is account-wide (ISOLATED_MARGIN / REGULAR_MARGIN; the per-symbol
/v5/position/switch-isolated is for classic accounts only, https://bybit-exchange.github.io/docs/v5/position/cross-isolate);
the leverage is set per symbol with /v5/position/set-leverage (110043 "not modified" counts as done).

What it guarantees, and how:
- At most one order per orderLinkId. The link id is derived from the signal id (core/exchange/broker.py). Before
  a create, and again after any create whose outcome is unknown (timeout, dropped connection, 5xx, an unreadable
  or odd reply), the order is looked up by its link id (open/recent orders, then order history); if the venue
  has it, its state is returned instead of sending. A create is only (re)sent after a lookup proved the venue
  has no trace of it, and Bybit's own duplicate check (retCode 110072) backs that up: a duplicate reply means
  "already sent", so the broker looks it up again. `sends` counts the creates this process sent per link id.
- Quantities and prices leave on the instrument's grids (Decimal, from instruments-info): qty rounded down to
  qtyStep, take-profit to the nearest tick, stop-loss away from the entry (long: down, short: up). Below
  minOrderQty or minNotionalValue the order is refused locally with the reason. TP/SL are sent only when the
  intent has them (tpslMode Full, market TP/SL orders): the broker never invents one.
- Rate limits: each endpoint class has a rolling-window limiter (order create/amend/cancel and set-leverage
  10/s, queries 50/s); a rate-limit retCode (10006/10018) pauses that class and retries with backoff; HTTP 403
  (Bybit's IP ban) stops every request for `ip_ban_pause` seconds and fails fast meanwhile.

pybit's HTTP client is blocking (requests + time.sleep). Its calls run in two small dedicated thread pools (not
asyncio.to_thread's shared default executor, which has 6 workers on this machine and is shared with the rest
of the process): a request then leaves when its rate-limit slot is granted, not whenever a shared worker frees
up, and order traffic never queues behind slow queries. Each worker thread has its own pybit HTTP (a
requests.Session is not documented as thread-safe). pybit's own retries are switched off: it would resend a
create on its retry codes before the lookup could run.

The API key and secret are passed to pybit as given and never logged; pybit's HTTP dataclass repr (which would
print them) is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import requests
from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential

from core.exchange.broker import (
    TERMINAL_STATUSES,
    Balance,
    BrokerError,
    Fill,
    FundingFee,
    MarginMode,
    OrderIntent,
    OrderRejected,
    OrderState,
    OrderUnknown,
    Position,
    PositionMode,
    Side,
    VenueUnavailable,
    entry_side,
    exit_side,
    order_link_id,
    position_idx,
)
from core.exchange.bybit_private import (
    OPEN_STATUSES,
    BadMessage,
    PrivateEvent,
    PrivateStream,
    dec,
    dec_or_zero,
    is_funding,
    ms_time,
    parse_execution,
    parse_funding,
    parse_order,
    parse_position,
    private_url,
    valid_link_id,
)
from core.instruments import Instrument, Instruments
from core.market.candle import dt_to_ms

log = logging.getLogger(__name__)

CATEGORY = "linear"
SETTLE_COIN = "USDT"
DUPLICATE_LINK_ID = 110072  # "OrderLinkedID is duplicate": the venue already has this link id
LEVERAGE_UNCHANGED = 110043  # "Set leverage not modified": already at that leverage
ORDER_GONE = 110001  # cancel: "order does not exist" (filled or cancelled already)
# /v5/account/set-margin-mode's words for the two modes a bot may ask for
MARGIN_MODES: dict[MarginMode, str] = {"isolated": "ISOLATED_MARGIN", "cross": "REGULAR_MARGIN"}
RATE_LIMIT_CODES = frozenset({10006, 10018})  # per-UID and per-IP request limits
SERVER_ERROR_CODES = frozenset({10000, 10016})  # server timeout / internal error: the outcome is unknown
EXECUTION_WINDOW = timedelta(days=7)  # get_executions' widest startTime..endTime


@dataclass(frozen=True, slots=True)
class ClosedPnl:
    """One row of Bybit's closed P&L: a position (part) closed by `order_id`, e.g. by its take-profit."""

    symbol: str
    order_id: str
    side: str  # the closing order's side (Sell closes a long)
    qty: Decimal
    avg_entry_price: Decimal
    avg_exit_price: Decimal
    closed_pnl: Decimal
    time: datetime


@dataclass(frozen=True, slots=True)
class AccountSetup:
    """What prepare_symbol found and set for one symbol."""

    symbol: str
    position_mode: PositionMode
    leverage: Decimal
    margin_mode: MarginMode | None  # None: left as the account has it


class AccountConflict(BrokerError):
    """Two bots on one account want different account-wide settings (a unified account's margin mode)."""


class RateLimiter:
    """At most `limit` acquisitions in any `per`-second window: a token bucket whose tokens come back exactly
    one window after they were taken. (A classic refilling bucket of capacity N also lets N more through
    during the refill second, which breaks "N per second" in a window Bybit may count.) FIFO for waiters."""

    def __init__(self, limit: int, per: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or per <= 0:
            raise ValueError("a rate limit needs limit >= 1 and per > 0")
        self.limit = limit
        self.per = per
        self._clock = clock
        self._taken: list[float] = []
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._taken = [t for t in self._taken if now - t < self.per]
                if len(self._taken) < self.limit:
                    self._taken.append(now)
                    return
                await asyncio.sleep(self._taken[0] + self.per - now)

    def pause(self, seconds: float) -> None:
        """Hold every acquisition for `seconds` (the venue said we went too fast)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)


class _HTTP(HTTP):
    """pybit's HTTP with a repr that does not print the API key and secret (its dataclass repr does)."""

    def __repr__(self) -> str:
        return f"pybit.HTTP(endpoint={self.endpoint!r})"


class _Rest:
    """pybit HTTP calls in dedicated worker pools, one pybit client per worker thread."""

    def __init__(self, endpoint: str | None, options: dict[str, Any], *, order_workers: int, query_workers: int):
        self._endpoint = endpoint.rstrip("/") if endpoint else None
        self._options = options  # holds the keys: never logged
        self._pools = {
            "order": ThreadPoolExecutor(order_workers, thread_name_prefix="bybit-order"),
            "query": ThreadPoolExecutor(query_workers, thread_name_prefix="bybit-query"),
        }
        self._local = threading.local()
        self._clients: list[HTTP] = []
        self._lock = threading.Lock()

    async def call(self, pool: str, method: str, params: dict[str, Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pools[pool], self._call, method, params)

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        return getattr(self._http(), method)(**params)

    def _http(self) -> HTTP:
        http: HTTP | None = getattr(self._local, "http", None)
        if http is None:
            http = _HTTP(**self._options)
            http.retry_codes = set()  # our retries, after a lookup; set after __post_init__, which fills defaults
            if self._endpoint is not None:
                # pybit builds https://api.{domain}.{tld}; every path is f"{self.endpoint}/v5/...": the seam
                http.endpoint = self._endpoint
            self._local.http = http
            with self._lock:
                self._clients.append(http)
        return http

    async def close(self) -> None:
        for pool in self._pools.values():
            await asyncio.to_thread(pool.shutdown, True)
        with self._lock:
            clients, self._clients = self._clients, []
        for http in clients:
            http.client.close()


class _Unknown(Exception):
    """A reply that proves nothing (accepted without an order id, an odd shape): treat like a timeout."""


def _kind(exc: BaseException) -> str:
    """unknown: the request may or may not have taken effect; duplicate: the venue has the link id already;
    rate_limited / ip_banned: refused for speed; rejected: refused for good; bug: anything else."""
    if isinstance(exc, InvalidRequestError):
        if exc.status_code == DUPLICATE_LINK_ID:
            return "duplicate"
        if exc.status_code in RATE_LIMIT_CODES:
            return "rate_limited"
        return "unknown" if exc.status_code in SERVER_ERROR_CODES else "rejected"
    if isinstance(exc, FailedRequestError):
        if exc.status_code == 403:
            return "ip_banned"
        if exc.status_code == 429:
            return "rate_limited"
        # 5xx: a gateway in front of the engine failed; 409 is pybit's "could not decode the JSON reply"
        return "unknown" if exc.status_code >= 500 or exc.status_code == 409 else "rejected"
    if isinstance(exc, requests.RequestException | _Unknown):
        return "unknown"  # timeouts, dropped or refused connections
    return "bug"


def _retryable(exc: BaseException) -> bool:
    return _kind(exc) in {"unknown", "duplicate", "rate_limited"}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InvalidRequestError | FailedRequestError):
        return f"{exc.message} (code {exc.status_code})"
    return repr(exc)[:200]


def _wire(value: Decimal) -> str:
    """Plain notation for pybit's strings (never 1E+1)."""
    return format(value, "f")


def _rows(result: dict[str, Any], what: str) -> list[Any]:
    rows = result.get("list")
    if not isinstance(rows, list):
        raise BrokerError(f"{what}: the reply has no list: {str(result)[:200]}")
    return rows


def parse_instrument(row: Any) -> Instrument:
    """An instruments-info row: priceFilter.tickSize, lotSizeFilter.qtyStep / minOrderQty / minNotionalValue."""
    if not isinstance(row, dict) or not isinstance(row.get("symbol"), str):
        raise BadMessage("bad_shape", f"instrument {str(row)[:80]}")
    prices, lots = row.get("priceFilter"), row.get("lotSizeFilter")
    if not isinstance(prices, dict) or not isinstance(lots, dict):
        raise BadMessage("missing_field", f"{row['symbol']}: priceFilter/lotSizeFilter")
    tick = dec(prices.get("tickSize"), "tickSize")
    step = dec(lots.get("qtyStep"), "qtyStep")
    min_qty = dec(lots.get("minOrderQty"), "minOrderQty")
    min_notional = lots.get("minNotionalValue")
    if tick <= 0 or step <= 0 or min_qty < 0:
        raise BadMessage("bad_value", f"{row['symbol']}: tick {tick} step {step} min {min_qty}")
    if min_notional in (None, ""):
        return Instrument(row["symbol"], tick, step, min_qty)
    return Instrument(row["symbol"], tick, step, min_qty, dec(min_notional, "minNotionalValue"))


class BybitBroker:
    """The Broker protocol on Bybit linear perpetuals. Close it with `aclose()` (`close()` closes positions)."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        testnet: bool = False,
        demo: bool = False,
        rest_url: str | None = None,
        ws_url: str | None = None,
        instruments: Instruments | None = None,
        clock: Callable[[], datetime],  # the adapter needs "now"; the host passes the wall clock
        recv_window: int = 5000,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        order_rate: int = 10,
        query_rate: int = 50,
        rate_window: float = 1.0,
        rate_limit_pause: float = 1.0,
        ip_ban_pause: float = 600.0,
        confirm_attempts: int = 3,
        confirm_delay: float = 0.2,
        instruments_page: int = 1000,
        stream_options: dict[str, Any] | None = None,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("BybitBroker needs an API key and secret")
        self.instruments = instruments if instruments is not None else Instruments()
        self._clock = clock
        self._rest = _Rest(
            rest_url,
            {
                "testnet": testnet,
                "demo": demo,
                "api_key": api_key,
                "api_secret": api_secret,
                "recv_window": recv_window,
                "timeout": timeout,
                "max_retries": 1,  # one try per call: retrying is ours, after a lookup
            },
            order_workers=order_rate,
            query_workers=8,
        )
        self._stream_args = (ws_url or private_url(testnet=testnet, demo=demo), api_key, api_secret)
        # PrivateStream options: socket_options (pybit's ping_interval, ping_timeout, retries), watch_interval,
        # reconnect_after, memory
        self._stream_options = stream_options or {}
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._limits = {"order": RateLimiter(order_rate, rate_window), "query": RateLimiter(query_rate, rate_window)}
        self._rate_limit_pause = rate_limit_pause
        self._ip_ban_pause = ip_ban_pause
        self._banned_until = 0.0
        self._confirm_attempts = confirm_attempts
        self._confirm_delay = confirm_delay
        self._instruments_page = instruments_page
        self._venue: dict[str, Instrument] = {}  # what instruments-info said (the registry may hold guesses too)
        self._leverage: dict[str, Decimal] = {}
        self._prepared: dict[str, Decimal] = {}  # symbol -> the leverage prepare_symbol set: orders keep it
        self._modes: dict[str, PositionMode] = {}  # symbol -> the position mode the account has
        self._margin_mode: MarginMode | None = None  # set by this process (account-wide)
        self._leverage_locks: dict[str, asyncio.Lock] = {}
        self._link_locks: dict[str, asyncio.Lock] = {}
        self._stream: PrivateStream | None = None
        self._closed = False
        self.sends: Counter[str] = Counter()  # creates sent by this process, per order link id
        self.requests: Counter[str] = Counter()  # pybit calls made, per method
        self.errors: Counter[str] = Counter()  # failed calls, per kind (unknown, rate_limited, ...)

    def __repr__(self) -> str:
        return f"BybitBroker(stream={self._stream_args[0]!r})"

    # -- instruments and leverage -----------------------------------------------------------------------

    async def load_instruments(self) -> int:
        """Every linear instrument (cursor pages) into the Instruments registry; returns how many."""
        rows = await self._pages("get_instruments_info", limit=self._instruments_page, category=CATEGORY)
        loaded = 0
        for row in rows:
            try:
                instrument = parse_instrument(row)
            except BadMessage as exc:
                self.errors["bad_instrument"] += 1
                log.warning("bybit: skipping an instrument: %s", exc)
                continue
            self._venue[instrument.symbol] = instrument
            self.instruments.add(instrument)
            loaded += 1
        log.info("bybit: %d linear instruments loaded", loaded)
        return loaded

    def instrument(self, symbol: str) -> Instrument:
        """The venue's rules for `symbol` (KeyError before load_instruments() or for an unknown symbol)."""
        return self._venue[symbol]

    async def _instrument(self, symbol: str) -> Instrument:
        if symbol not in self._venue:
            await self.load_instruments()  # first use, or a listing newer than the last load
        found = self._venue.get(symbol)
        if found is None:
            raise OrderRejected(f"{symbol} is not a Bybit linear instrument")
        return found

    async def ensure_leverage(self, symbol: str, leverage: Decimal) -> bool:
        """Set buy and sell leverage of `symbol` once per process; True when the venue changed it."""
        if leverage <= 0:
            raise ValueError(f"leverage must be positive, got {leverage}")
        lock = self._leverage_locks.setdefault(symbol, asyncio.Lock())
        async with lock:  # concurrent opens on one symbol set it once
            if self._leverage.get(symbol) == leverage:
                return False
            value = _wire(leverage.normalize())
            try:
                await self._call(
                    "order", "set_leverage", category=CATEGORY, symbol=symbol, buyLeverage=value, sellLeverage=value
                )
                changed = True
            except InvalidRequestError as exc:
                if exc.status_code != LEVERAGE_UNCHANGED:
                    raise OrderRejected(
                        f"{symbol}: leverage {value} refused: {_reason(exc)}", code=exc.status_code
                    ) from exc
                changed = False
            except BrokerError:
                raise
            except Exception as exc:
                raise self._failure("set_leverage", exc) from exc
            self._leverage[symbol] = leverage
            log.info("bybit: %s leverage %s (%s)", symbol, value, "set" if changed else "unchanged")
            return changed

    async def position_mode(self, symbol: str) -> PositionMode:
        """The symbol's position mode, read once from its /v5/position/list rows: Bybit answers a named symbol
        with one row (positionIdx 0) in one-way mode and one per side (1 Buy, 2 Sell) in hedge mode."""
        known = self._modes.get(symbol)
        if known is not None:
            return known
        result = await self._query("get_positions", category=CATEGORY, symbol=symbol)
        indexes = {row.get("positionIdx") for row in _rows(result, "get_positions") if isinstance(row, dict)}
        if indexes == {0}:
            mode: PositionMode = "one_way"
        elif indexes and indexes <= {1, 2}:
            mode = "hedge"
        else:
            raise BrokerError(f"{symbol}: cannot tell the position mode from positionIdx {sorted(map(str, indexes))}")
        self._modes[symbol] = mode
        return mode

    async def set_margin_mode(self, mode: MarginMode) -> bool:
        """The account's margin mode (unified account: account-wide); once per process. True when sent."""
        if self._margin_mode == mode:
            return False
        if self._margin_mode is not None:
            raise AccountConflict(f"the account's margin mode is {self._margin_mode} (a unified account has one "
                                  f"for all symbols); a bot asks for {mode}: give every live bot the same margin_mode")
        try:
            await self._call("order", "set_margin_mode", setMarginMode=MARGIN_MODES[mode])
        except BrokerError:
            raise
        except InvalidRequestError as exc:
            raise BrokerError(f"margin mode {mode} refused: {_reason(exc)}") from exc
        except Exception as exc:
            raise self._failure("set_margin_mode", exc) from exc
        self._margin_mode = mode
        log.info("bybit: account margin mode %s", MARGIN_MODES[mode])
        return True

    async def prepare_symbol(self, symbol: str, *, leverage: Decimal,
                             margin_mode: MarginMode | None = None) -> AccountSetup:
        """The account set as a bot needs it before it trades `symbol` (at start, or when a symbol is added):
        its position mode read (orders then carry the matching positionIdx), the margin mode set (None: left as
        it is), the symbol's leverage set; every later order on the symbol keeps that leverage. Idempotent."""
        await self._instrument(symbol)
        mode = await self.position_mode(symbol)
        if margin_mode is not None:
            await self.set_margin_mode(margin_mode)
        await self.ensure_leverage(symbol, leverage)
        self._prepared[symbol] = leverage
        return AccountSetup(symbol, mode, leverage, margin_mode)

    # -- orders -----------------------------------------------------------------------------------------

    async def open(self, intent: OrderIntent) -> OrderState:
        """An entry with the intent's TP/SL (tpslMode Full), at most once per order link id: a market order, or a
        post-only limit (Bybit cancels one that would take liquidity; the state says so)."""
        if intent.reduce_only:
            raise ValueError("open() places entries; a reduce-only intent goes to close()")
        link = self._checked_link(intent.order_link_id)
        known = await self.order(link)  # a restart re-sending an old intent gets the old order back
        if known is not None:
            log.info("bybit: order %s is already at the venue (%s): not sending", link, known.status)
            return known
        instrument = await self._instrument(intent.symbol)
        qty = instrument.qty(intent.qty)
        if qty <= 0 or qty < instrument.min_qty:
            raise OrderRejected(
                f"{intent.symbol}: qty {intent.qty} rounds down to {qty}, below the minimum order qty "
                f"{instrument.min_qty} (step {instrument.qty_step})",
                order_link_id=link,
            )
        last = await self._last_price(intent.symbol)
        long = intent.side == "long"
        limit: Decimal | None = None
        if intent.price is not None:  # a maker's price: rounded away from the market (a long's down)
            limit = instrument.price(intent.price, ROUND_FLOOR if long else ROUND_CEILING)
        price = limit if limit is not None else last
        bound = intent.price_bound
        if bound is not None and (last > bound if long else last < bound):
            raise OrderRejected(
                f"{intent.symbol}: the last price {last} is past the fallback's bound {bound}: not entering at market",
                order_link_id=link,
            )
        if qty * price < instrument.min_notional:
            raise OrderRejected(
                f"{intent.symbol}: {qty} x {price} = {qty * price} USDT is below the minimum order value "
                f"{instrument.min_notional} USDT",
                order_link_id=link,
            )
        take_profit, stop_loss = _protective(intent, instrument, price)
        await self.ensure_leverage(intent.symbol, self._prepared.get(intent.symbol, intent.leverage))
        params: dict[str, Any] = {
            "category": CATEGORY,
            "symbol": intent.symbol,
            "side": entry_side(intent.side),
            "orderType": intent.order_type,
            "qty": _wire(qty),
            "positionIdx": position_idx(await self.position_mode(intent.symbol), intent.side),
            "orderLinkId": link,
        }
        if limit is not None:
            params["price"] = _wire(limit)
            params["timeInForce"] = "PostOnly"
        if take_profit is not None:
            params["takeProfit"] = _wire(take_profit)
        if stop_loss is not None:
            params["stopLoss"] = _wire(stop_loss)
        if take_profit is not None or stop_loss is not None:
            params["tpslMode"] = "Full"
        return await self._submit(params, looked_up=True)

    async def set_stop(self, symbol: str, stop_loss: Decimal, side: Side) -> None:
        """Move the `side` position's stop-loss (trailing stop, breakeven); repeating it is harmless."""
        instrument = await self._instrument(symbol)
        idx = position_idx(await self.position_mode(symbol), side)
        await self._call("order", "set_trading_stop", category=CATEGORY, symbol=symbol, positionIdx=idx,
                         tpslMode="Full", stopLoss=_wire(instrument.price(stop_loss)))

    async def cancel(self, intent: OrderIntent) -> OrderState | None:
        """Cancel a resting order by its link id, then its state as the venue has it: Cancelled (with what
        filled before), or Filled when the fill won the race. Repeating it is harmless (110001: already over)."""
        link = self._checked_link(intent.order_link_id)
        try:
            await self._call("order", "cancel_order", category=CATEGORY, symbol=intent.symbol, orderLinkId=link)
        except InvalidRequestError as exc:
            if exc.status_code != ORDER_GONE:
                raise BrokerError(f"cancel {link} failed: {_reason(exc)}") from exc
        except BrokerError:
            raise
        except Exception as exc:
            raise self._failure(f"cancel {link}", exc) from exc
        state: OrderState | None = None
        for attempt in range(self._confirm_attempts):  # the cancel is asynchronous at the venue too
            if attempt:
                await asyncio.sleep(self._confirm_delay)
            state = await self.order(link)
            if state is None or state.status in TERMINAL_STATUSES:
                break
        return state

    async def close(self, intent: OrderIntent) -> OrderState:
        """A reduce-only market order against the intent's position side, under its own link id."""
        link = self._checked_link(intent.order_link_id)
        try:
            entry_link = order_link_id(intent.signal_id, "open")
        except ValueError:
            entry_link = None
        if link == entry_link:
            raise ValueError(f"a close needs its own link id (order_link_id(signal_id, 'close')), got {link!r}")
        known = await self.order(link)
        if known is not None:
            log.info("bybit: close %s is already at the venue (%s): not sending", link, known.status)
            return known
        instrument = await self._instrument(intent.symbol)
        qty = instrument.qty(intent.qty)
        if qty <= 0:
            raise OrderRejected(f"{intent.symbol}: close qty {intent.qty} rounds down to 0", order_link_id=link)
        params: dict[str, Any] = {
            "category": CATEGORY,
            "symbol": intent.symbol,
            "side": exit_side(intent.side),
            "orderType": "Market",
            "qty": _wire(qty),
            "positionIdx": position_idx(await self.position_mode(intent.symbol), intent.side),
            "reduceOnly": True,
            "orderLinkId": link,
        }
        return await self._submit(params, looked_up=True)

    async def order(self, order_link_id: str) -> OrderState | None:
        """The order with this link id (open or recent, then history), None if the venue never saw it."""
        try:
            async for attempt in self._retrying():
                with attempt:
                    return await self._lookup(order_link_id)
        except BrokerError:
            raise
        except Exception as exc:
            raise self._failure("order lookup", exc) from exc
        raise AssertionError("unreachable")

    async def _submit(self, params: dict[str, Any], *, looked_up: bool) -> OrderState:
        link: str = params["orderLinkId"]
        lock = self._link_locks.setdefault(link, asyncio.Lock())
        async with lock:  # two callers with one link id: the second finds the first's order
            unsure = False  # a create of this call may have reached the venue
            skip_lookup = looked_up
            try:
                async for attempt in self._retrying():
                    with attempt:
                        if not skip_lookup:
                            known = await self._lookup(link)
                            if known is not None:
                                if unsure:
                                    log.info("bybit: order %s did reach the venue (%s)", link, known.status)
                                return known
                        skip_lookup = False
                        if self.sends[link]:
                            log.warning("bybit: order %s: the venue has no trace of it after %d send(s); sending again",
                                        link, self.sends[link])
                        self.sends[link] += 1
                        try:
                            result = await self._request("order", "place_order", **params)
                        except Exception as exc:
                            kind = _kind(exc)
                            if kind in ("unknown", "duplicate"):
                                unsure = True
                                log.warning("bybit: create %s: %s; looking it up before anything else", link,
                                            "the venue already has it" if kind == "duplicate" else _reason(exc))
                            elif kind == "rejected":
                                if unsure:  # refused now, but an earlier try may have landed: one last look
                                    known = await self._lookup(link)
                                    if known is not None:
                                        return known
                                raise OrderRejected(
                                    f"{params['symbol']}: order {link} refused: {_reason(exc)}",
                                    code=getattr(exc, "status_code", None),
                                    order_link_id=link,
                                ) from exc
                            raise
                        unsure = True  # accepted: from here on the order exists
                        return await self._confirm(link, params, result)
            except BrokerError:
                raise
            except Exception as exc:
                if unsure:
                    raise OrderUnknown(
                        f"order {link}: the venue may have it but no lookup confirmed it ({_reason(exc)}); "
                        "reconcile before sending it again"
                    ) from exc
                raise self._failure(f"order {link}", exc) from exc
            raise AssertionError("unreachable")

    async def _lookup(self, link: str) -> OrderState | None:
        """One look, no retries: open + recent closed orders first, then the order history."""
        for method in ("get_open_orders", "get_order_history"):
            result = await self._request("query", method, category=CATEGORY, orderLinkId=link)
            for row in _rows(result, method):
                if isinstance(row, dict) and row.get("orderLinkId") == link:
                    return parse_order(row)
        return None

    async def _confirm(self, link: str, params: dict[str, Any], result: dict[str, Any]) -> OrderState:
        """The state of an accepted order. The create reply only means "accepted", so look it up (briefly
        waiting for a market order to finish); a failed lookup here must not fail the open."""
        order_id = result.get("orderId")
        state: OrderState | None = None
        for attempt in range(self._confirm_attempts):
            if attempt:
                await asyncio.sleep(self._confirm_delay)
            try:
                state = await self._lookup(link)
            except Exception as exc:
                log.info("bybit: confirming %s failed: %s", link, _reason(exc))
                continue
            # a market order is over within moments; a limit order found in the book is confirmed as it is
            if state is not None and (state.status in TERMINAL_STATUSES or params["orderType"] == "Limit"):
                break
        if state is not None:
            return state
        log.warning("bybit: order %s accepted (id %s) but not visible yet; the stream will confirm it", link, order_id)
        return OrderState(
            order_link_id=link,
            exchange_order_id=order_id if isinstance(order_id, str) and order_id else None,
            symbol=params["symbol"],
            side=params["side"],
            qty=Decimal(params["qty"]),
            status="New",
            reduce_only=bool(params.get("reduceOnly", False)),
        )

    @staticmethod
    def _checked_link(link: str) -> str:
        if not valid_link_id(link):
            raise ValueError(f"order link id {link!r} breaks Bybit's rule (1..36 of [A-Za-z0-9_-])")
        return link

    async def _last_price(self, symbol: str) -> Decimal:
        result = await self._query("get_tickers", category=CATEGORY, symbol=symbol)
        for row in _rows(result, "get_tickers"):
            if isinstance(row, dict) and row.get("symbol") == symbol:
                price = dec(row.get("lastPrice"), "lastPrice")
                if price > 0:
                    return price
        raise BrokerError(f"no last price for {symbol}")

    # -- account state ----------------------------------------------------------------------------------

    async def positions(self) -> list[Position]:
        """Open linear USDT positions (flat rows skipped)."""
        rows = await self._pages("get_positions", limit=200, category=CATEGORY, settleCoin=SETTLE_COIN)
        out = [self._parsed(parse_position, row) for row in rows]
        return [p for p in out if p.qty > 0]

    async def open_orders(self) -> list[OrderState]:
        """Working orders, including the TP/SL orders of positions (status Untriggered, empty link id).
        The endpoint also returns recently closed orders; those are left out."""
        rows = await self._pages("get_open_orders", limit=50, category=CATEGORY, settleCoin=SETTLE_COIN)
        states = [self._parsed(parse_order, row) for row in rows]
        return [s for s in states if s.status in OPEN_STATUSES]

    async def balance(self) -> Balance:
        result = await self._query("get_wallet_balance", accountType="UNIFIED")
        rows = _rows(result, "get_wallet_balance")
        if not rows or not isinstance(rows[0], dict):
            raise BrokerError("get_wallet_balance: no UNIFIED account in the reply")
        row = rows[0]
        try:
            return Balance(
                equity=dec_or_zero(row.get("totalEquity"), "totalEquity"),
                available=dec_or_zero(row.get("totalAvailableBalance"), "totalAvailableBalance"),
                margin_used=dec_or_zero(row.get("totalInitialMargin"), "totalInitialMargin"),
                unrealized_pnl=dec_or_zero(row.get("totalPerpUPL"), "totalPerpUPL"),
            )
        except BadMessage as exc:
            raise BrokerError(f"get_wallet_balance: {exc}") from exc

    async def executions(
        self, since: datetime, until: datetime | None = None, *, symbol: str | None = None
    ) -> list[Fill]:
        """Trade fills in [since, until], oldest first; funding rows left out; a row reported twice counted once."""
        fills: dict[str, Fill] = {}
        for row in await self._windows("get_executions", since, until, symbol=symbol):
            if is_funding(row):
                continue
            fill = self._parsed(parse_execution, row)
            fills.setdefault(fill.exec_id, fill)
        return sorted(fills.values(), key=lambda f: (f.time, f.seq or 0, f.exec_id))

    async def funding(self, since: datetime, until: datetime | None = None, *,
                      symbol: str | None = None) -> list[FundingFee]:
        """Funding settlements in [since, until], oldest first, each once."""
        fees: dict[str, FundingFee] = {}
        for row in await self._windows("get_executions", since, until, symbol=symbol, execType="Funding"):
            if is_funding(row):
                fee = self._parsed(parse_funding, row)
                fees.setdefault(fee.exec_id, fee)
        return sorted(fees.values(), key=lambda f: (f.time, f.exec_id))

    async def last_price(self, symbol: str) -> Decimal:
        return await self._last_price(symbol)

    async def closed_pnl(self, since: datetime, until: datetime | None = None) -> list[ClosedPnl]:
        """Bybit's closed P&L rows in [since, until], oldest first (what a TP/SL close while away earned)."""
        out = [self._parsed(_closed_pnl, row) for row in await self._windows("get_closed_pnl", since, until)]
        return sorted(out, key=lambda c: (c.time, c.order_id))

    def _parsed(self, parse: Callable[[Any], Any], row: Any) -> Any:
        try:
            return parse(row)
        except BadMessage as exc:
            # an unreadable row in account state is a gap the caller must know about, not something to skip
            raise BrokerError(f"unreadable Bybit row ({exc}): {str(row)[:200]}") from exc

    # -- the private stream -----------------------------------------------------------------------------

    async def start_stream(self) -> PrivateStream:
        """Connect the private stream (order, execution, position); idempotent."""
        if self._closed:
            raise BrokerError("the broker is closed")
        if self._stream is None:
            url, key, secret = self._stream_args
            stream = PrivateStream(url, api_key=key, api_secret=secret, clock=self._clock, **self._stream_options)
            try:
                await stream.start()
            except BaseException:
                await stream.close()
                raise
            self._stream = stream
        return self._stream

    async def events(self) -> AsyncIterator[PrivateEvent]:
        """Parsed private events (Fill, OrderState, Position), each fact once; ends at aclose()."""
        stream = await self.start_stream()
        async for event in stream.events():
            yield event

    @property
    def stream(self) -> PrivateStream | None:
        return self._stream

    async def aclose(self) -> None:
        """Stop the private stream (pybit's threads joined) and the HTTP workers."""
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            await self._stream.close()
        await self._rest.close()

    async def __aenter__(self) -> BybitBroker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- requests ---------------------------------------------------------------------------------------

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff, max=self._max_backoff),
            retry=retry_if_exception(_retryable),
            reraise=True,
            before_sleep=_log_retry,
        )

    async def _request(self, bucket: str, method: str, **params: Any) -> dict[str, Any]:
        """One pybit call under the rate limits; its result object, or the raw exception."""
        if self._closed:
            raise BrokerError("the broker is closed")
        now = time.monotonic()
        if now < self._banned_until:
            wait = self._banned_until - now
            raise VenueUnavailable(f"Bybit banned this IP (HTTP 403); requests resume in {wait:.0f}s")
        await self._limits[bucket].acquire()
        self.requests[method] += 1
        try:
            reply = await self._rest.call(bucket, method, params)
        except Exception as exc:
            kind = _kind(exc)
            self.errors[kind] += 1
            if kind == "rate_limited":
                log.warning("bybit: %s rate-limited (%s): pausing %s requests", method, _reason(exc), bucket)
                self._limits[bucket].pause(self._rate_limit_pause)
            elif kind == "ip_banned":
                self._banned_until = time.monotonic() + self._ip_ban_pause
                log.error("bybit: HTTP 403 on %s (IP rate limit): no requests for %.0fs", method, self._ip_ban_pause)
            raise
        result = reply.get("result") if isinstance(reply, dict) else None
        if not isinstance(result, dict):
            self.errors["unknown"] += 1
            raise _Unknown(f"{method}: unexpected reply {str(reply)[:200]}")
        return result

    async def _call(self, bucket: str, method: str, **params: Any) -> dict[str, Any]:
        """_request with retries on unknown outcomes and rate limits (for calls that are safe to repeat)."""
        async for attempt in self._retrying():
            with attempt:
                return await self._request(bucket, method, **params)
        raise AssertionError("unreachable")

    async def _query(self, method: str, **params: Any) -> dict[str, Any]:
        try:
            return await self._call("query", method, **params)
        except BrokerError:
            raise
        except Exception as exc:
            raise self._failure(method, exc) from exc

    async def _windows(self, method: str, since: datetime, until: datetime | None, **params: Any) -> list[Any]:
        """Every row in [since, until] (default: now by the injected clock) of a list Bybit serves at most
        7 days of per request: window by window, each in cursor pages of 100."""
        end = until if until is not None else self._clock()
        rows: list[Any] = []
        start = since
        while start <= end:
            stop = min(start + EXECUTION_WINDOW, end)
            rows += await self._pages(method, limit=100, category=CATEGORY, startTime=dt_to_ms(start),
                                      endTime=dt_to_ms(stop), **params)
            start = stop + timedelta(milliseconds=1)  # both ends are inclusive
        return rows

    async def _pages(self, method: str, *, limit: int, **params: Any) -> list[Any]:
        """Every row of a cursor-paginated list."""
        rows: list[Any] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            result = await self._query(method, limit=limit, cursor=cursor, **params)
            page = _rows(result, method)
            rows += page
            cursor = result.get("nextPageCursor") or None
            if not page or not isinstance(cursor, str) or cursor in seen:
                return rows
            seen.add(cursor)

    @staticmethod
    def _failure(what: str, exc: BaseException) -> BrokerError:
        if _kind(exc) in ("rejected", "bug"):
            return BrokerError(f"{what} failed: {_reason(exc)}")
        return VenueUnavailable(f"{what}: Bybit did not answer usefully ({_reason(exc)})")


def _protective(intent: OrderIntent, instrument: Instrument, price: Decimal) -> tuple[Decimal | None, Decimal | None]:
    """TP to the nearest tick; SL away from the entry (a long's down, a short's up) so rounding never pulls
    the stop into the entry's noise. Both must sit on the right side of the last price."""
    long = intent.side == "long"
    take_profit = instrument.price(intent.take_profit) if intent.take_profit is not None else None
    stop_loss = (
        instrument.price(intent.stop_loss, ROUND_FLOOR if long else ROUND_CEILING)
        if intent.stop_loss is not None
        else None
    )
    for name, level, above in (("take-profit", take_profit, long), ("stop-loss", stop_loss, not long)):
        if level is None:
            continue
        if level <= 0 or (level <= price if above else level >= price):
            where = "above" if above else "below"
            raise OrderRejected(
                f"{intent.symbol}: {name} {level} must be {where} the last price {price} for a {intent.side}",
                order_link_id=intent.order_link_id,
            )
    return take_profit, stop_loss


def _closed_pnl(row: Any) -> ClosedPnl:
    if not isinstance(row, dict):
        raise BadMessage("bad_shape", f"closed pnl {type(row).__name__}")
    return ClosedPnl(
        symbol=str(row.get("symbol", "")),
        order_id=str(row.get("orderId", "")),
        side=str(row.get("side", "")),
        qty=dec_or_zero(row.get("closedSize", row.get("qty")), "closedSize"),
        avg_entry_price=dec_or_zero(row.get("avgEntryPrice"), "avgEntryPrice"),
        avg_exit_price=dec_or_zero(row.get("avgExitPrice"), "avgExitPrice"),
        closed_pnl=dec(row.get("closedPnl"), "closedPnl"),
        time=ms_time(row.get("updatedTime", row.get("createdTime")), "updatedTime"),
    )


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    why = _reason(exc) if exc is not None else "?"
    log.info("bybit: attempt %d failed (%s); retrying in %.2fs", state.attempt_number, why, wait)


__all__ = [
    "AccountConflict",
    "AccountSetup",
    "BrokerError",
    "BybitBroker",
    "ClosedPnl",
    "OrderRejected",
    "OrderUnknown",
    "RateLimiter",
    "VenueUnavailable",
    "parse_instrument",
]
