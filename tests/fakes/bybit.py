"""FakeBybit: a local Bybit v5 server for tests that drive the real pybit client.

It runs an aiohttp app on 127.0.0.1 (a free port) in its own thread and event loop, because pybit's
WebSocket client connects synchronously from its own threads and must not depend on the test's loop.

Public market data:
- WebSocket `/v5/public/linear`: subscribe/ping replies in the v5 format, kline pushes by the test,
  dropping connections (close frame or abort), going silent, refusing new connections, raw garbage.
- REST `GET /v5/market/kline`: newest-first string rows from an in-memory series the test controls.
- REST `GET /v5/market/instruments-info` (cursor pages; `list_symbol` sets a listing's status and launchTime) and
  `GET /v5/market/tickers` (the test sets prices and, with `set_turnover`/`list_symbol`, turnover24h).
- WebSocket subscribe/unsubscribe on an open connection change that connection's topics (`topics_now()` is the
  subscription state across open connections; `unsubscribe_requests` what was asked).
- REST `GET /v5/market/funding/history`: the settlements the test set (`set_funding_history`), newest first, at
  most `limit` (≤ 200) up to `endTime`; a startTime without an endTime is refused, as Bybit does.

Private trading (a linear unified account; see `_Venue`), REST signed the way pybit signs (any signature is
accepted, the X-BAPI-API-KEY header is required). Account settings, each citing Bybit's v5 page where it is done:
per-symbol leverage (`leverage_of`), the account-wide margin mode (`POST /v5/account/set-margin-mode`,
`margin_mode`, and `margin_mode_of(symbol)`: the mode in force when its leverage was set), the position mode
(`set_position_mode(hedge=True)`: positionIdx 1/2, an order with an index that does not fit is refused with 10001
"position idx not match position mode"; one side per symbol at a time is simulated). Limit orders: a post-only
limit that would take liquidity is accepted then cancelled (rejectReason EC_PostOnlyWillTakeLiquidity); otherwise
it rests (`resting()`) until `set_price` trades through it, then fills at its price as a maker (MAKER_FEE_RATE,
isMaker true); `POST /v5/order/cancel` withdraws a resting order (110001 when it is no longer in the book).
- `POST /v5/order/create` (market orders fill at once at the symbol's price, TP/SL become the position's and
  show as Untriggered conditional orders; duplicate orderLinkId -> 110072; an 11th create within 0.9 s ->
  10006),
  `POST /v5/position/set-leverage` (110043 when unchanged), `GET /v5/order/realtime` (open + recent closed),
  `GET /v5/order/history`, `GET /v5/position/list`, `GET /v5/account/wallet-balance`,
  `GET /v5/execution/list` (7-day window, cursor pages), `GET /v5/position/closed-pnl`.
- Injectable faults per path (`fail_next`): a reply delayed past the client's timeout, HTTP 5xx, HTTP 403, a
  dropped connection, each with or without the venue acting on the request first; lookups that lag behind an
  accepted order (`lag_lookups`).
- WebSocket `/v5/private`: auth op, subscribe to order / execution / position / wallet (all-in-one or `.linear`,
  never mixed), automatic pushes of what the venue does, and test pushes (duplicates, garbage).
- `close_position_by`: the venue closes a position by its TP or SL (e.g. while the desk is down).
- Margin: an entry whose initial margin exceeds the available balance is refused with 110007 ("ab not enough
  for new order"). `set_partial_fill(symbol, ratio)`: the next entry on the symbol fills only that share (an
  IOC market order meeting thin liquidity) and the rest is cancelled. `settle_funding(symbol, rate)`: a
  funding settlement on the position (an execution row with execType Funding; pushed like any execution).

Every public method is called from the test's thread; it runs on the server's loop and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import threading
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from bot.settings import Settings, load_settings
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
    authed: bool = False  # private connections: after a successful auth op


# -- the private side: a one-way-mode linear account ----------------------------------------------------------

FEE_RATE = Decimal("0.00055")  # taker
MAKER_FEE_RATE = Decimal("0.0002")  # a resting limit order's fill (execution isMaker true)
RESTING_STATUSES = frozenset({"New", "PartiallyFilled"})  # a limit order waiting in the book: cancellable
WEEK_MS = 7 * 86_400_000
RECENT_CLOSED = 500  # get_open_orders also lists this many recently closed orders
OPEN_ORDER_STATUSES = frozenset({"New", "PartiallyFilled", "Untriggered"})
PRIVATE_TOPICS = frozenset({"order", "execution", "position", "wallet"})
_LINK_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")

# (symbol, tickSize, qtyStep, minOrderQty, minNotionalValue), strings as Bybit writes them
DEFAULT_INSTRUMENTS: tuple[tuple[str, str, str, str, str], ...] = (
    ("BTCUSDT", "0.10", "0.001", "0.001", "5"),
    ("ETHUSDT", "0.01", "0.01", "0.01", "5"),
    ("SOLUSDT", "0.010", "0.1", "0.1", "5"),
    ("XRPUSDT", "0.0001", "1", "1", "5"),
    ("DOGEUSDT", "0.00001", "1", "1", "5"),
    ("BNBUSDT", "0.10", "0.01", "0.01", "5"),
)

Push = tuple[str, list[dict[str, Any]]]  # (private topic kind, REST-format rows)


class VenueError(Exception):
    """A v5 retCode answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def instrument_row(
    symbol: str, tick: str, qty_step: str, min_qty: str, min_notional: str = "5", status: str = "Trading",
    launch_ms: int = 1585526400000,
) -> dict[str, Any]:
    """A get_instruments_info row (linear perpetual), as https://bybit-exchange.github.io/docs/v5/market/instrument
    writes it: `status` Trading/PreLaunch/Delivering/Closed, `launchTime` in ms as a string."""
    return {
        "symbol": symbol,
        "contractType": "LinearPerpetual",
        "status": status,
        "baseCoin": symbol.removesuffix("USDT"),
        "quoteCoin": "USDT",
        "settleCoin": "USDT",
        "launchTime": str(launch_ms),
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": str(max(0, -Decimal(tick).as_tuple().exponent)),  # type: ignore[operator]
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": tick, "maxPrice": "1999999.80", "tickSize": tick},
        "lotSizeFilter": {
            "maxOrderQty": "1000000",
            "minOrderQty": min_qty,
            "qtyStep": qty_step,
            "postOnlyMaxOrderQty": "1000000",
            "maxMktOrderQty": "1000000",
            "minNotionalValue": min_notional,
        },
        "unifiedMarginTrade": True,
        "fundingInterval": 480,
        "copyTrading": "both",
        "upperFundingRate": "0.00375",
        "lowerFundingRate": "-0.00375",
        "isPreListing": False,
        "preListingInfo": None,
    }


def _s(value: Decimal) -> str:
    return format(value, "f")


@dataclass
class _Pos:
    symbol: str
    side: str  # Buy / Sell
    size: Decimal
    avg: Decimal
    leverage: Decimal
    tp: Decimal | None
    sl: Decimal | None
    created_ms: int
    updated_ms: int
    seq: int
    realised: Decimal = Decimal(0)
    idx: int = 0  # positionIdx: 0 one-way, 1 / 2 the Buy / Sell side in hedge mode


@dataclass
class CreateRecord:
    """One POST /v5/order/create as the fake received it."""

    body: dict[str, Any]
    at: float  # the server loop's monotonic time of arrival
    ret_code: int | None = None  # None: no v5 answer (a fault before the venue acted)
    fault: str | None = None

    @property
    def link(self) -> str:
        return str(self.body.get("orderLinkId", ""))


@dataclass
class Fault:
    kind: str  # timeout | 5xx | 403 | drop
    act: bool  # the venue handles the request before the fault hits (e.g. the order is placed anyway)
    delay: float


class _Venue:
    """The account's state machine; synchronous, guarded by FakeBybit's lock. Rows are kept in REST format."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.instruments: dict[str, dict[str, Any]] = {row[0]: instrument_row(*row) for row in DEFAULT_INSTRUMENTS}
        self.prices: dict[str, Decimal] = {}
        self.turnovers: dict[str, Decimal] = {}  # turnover24h per symbol (tickers)
        self.leverage: dict[str, Decimal] = {}
        # https://bybit-exchange.github.io/docs/v5/account/set-margin-mode: a unified account's margin mode is
        # account-wide (REGULAR_MARGIN = cross, the default; ISOLATED_MARGIN; PORTFOLIO_MARGIN)
        self.margin_mode = "REGULAR_MARGIN"
        self.margin_mode_by_symbol: dict[str, str] = {}  # the mode in force when each symbol's leverage was set
        # https://bybit-exchange.github.io/docs/v5/position/position-mode: one-way (positionIdx 0) or hedge mode
        # (1 Buy side, 2 Sell side) for USDT perpetuals; one setting for every symbol here
        self.hedge = False
        self.orders: list[dict[str, Any]] = []  # oldest first
        self.by_link: dict[str, dict[str, Any]] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        self.conditional: dict[tuple[str, str], dict[str, Any]] = {}  # (symbol, TakeProfit|StopLoss) -> order
        self.positions: dict[str, _Pos] = {}
        self.executions: list[dict[str, Any]] = []  # oldest first
        self.closed_pnl: list[dict[str, Any]] = []
        self.wallet_balance = Decimal("10000")
        self.fill_parts = 1  # a market fill split into this many executions sharing one seq
        self.partial: dict[str, Decimal] = {}  # symbol -> share of the next entry that fills (IOC remainder cancelled)
        self._seq = itertools.count(4_688_002_127)
        self._ids = itertools.count(1)

    def now_ms(self) -> int:
        return dt_to_ms(self.clock())

    def _new_id(self) -> str:
        n = next(self._ids)
        return f"{n:08x}-fake-4c1e-9e11-{n:012x}"

    # -- orders ---------------------------------------------------------------------------------------

    def place(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[Push]]:
        if body.get("category") != "linear":
            raise VenueError(10001, "params error: category only support linear")
        symbol = body.get("symbol")
        instrument = self.instruments.get(symbol) if isinstance(symbol, str) else None
        if instrument is None or not isinstance(symbol, str):
            raise VenueError(10001, "params error: symbol invalid")
        side = body.get("side")
        if side not in ("Buy", "Sell"):
            raise VenueError(10001, "params error: side invalid")
        order_type = body.get("orderType")
        if order_type not in ("Market", "Limit"):
            raise VenueError(10001, "params error: orderType invalid")
        reduce_only = body.get("reduceOnly") is True
        idx = self._position_idx(body, side, reduce_only)
        link = body.get("orderLinkId") or ""
        if not isinstance(link, str) or (link and not _LINK_ID.match(link)):
            raise VenueError(10001, "params error: orderLinkId invalid")
        if link and link in self.by_link:
            raise VenueError(110072, "OrderLinkedID is duplicate")
        lots = instrument["lotSizeFilter"]
        qty = self._decimal(body.get("qty"), "qty")
        if qty % Decimal(lots["qtyStep"]) != 0 or qty <= 0:
            raise VenueError(10001, "Qty invalid: not a multiple of qtyStep")
        if qty < Decimal(lots["minOrderQty"]):
            raise VenueError(10001, "The number of contracts exceeds minimum limit allowed")
        last = self.prices.get(symbol)
        if last is None:
            raise VenueError(10001, f"fake: no price for {symbol}; call set_price")
        tick = Decimal(instrument["priceFilter"]["tickSize"])
        limit: Decimal | None = None
        tif = "IOC"
        if order_type == "Limit":
            # https://bybit-exchange.github.io/docs/v5/order/create-order: a Limit order needs a price (on the tick
            # size); timeInForce GTC (default), IOC, FOK or PostOnly
            if reduce_only:
                raise VenueError(10001, "fake: reduce-only limit orders are not simulated")
            limit = self._level(body, "price", tick)
            if limit is None:
                raise VenueError(10001, "params error: price is required for a Limit order")
            tif = str(body.get("timeInForce", "GTC"))
            if tif not in ("GTC", "PostOnly"):
                raise VenueError(10001, "fake: only GTC and PostOnly limit orders are simulated")
        price = limit if limit is not None else last
        position = self.positions.get(symbol)
        if reduce_only:
            if position is None or position.side == side:
                raise VenueError(110017, "current position is zero, cannot fix reduce-only order qty")
            qty = min(qty, position.size)
        else:
            if position is not None and position.side != side:
                raise VenueError(10001, "fake: reversing a position (or both hedge sides) is not simulated")
            if qty * price < Decimal(lots["minNotionalValue"]):
                raise VenueError(110094, f"Order does not meet minimum order value {lots['minNotionalValue']}USDT")
            margin = qty * price / self.leverage.get(symbol, Decimal(10))
            if margin > Decimal(self.wallet_row()["totalAvailableBalance"]):
                raise VenueError(110007, "ab not enough for new order")
        tp = self._level(body, "takeProfit", tick)
        sl = self._level(body, "stopLoss", tick)
        if reduce_only and (tp is not None or sl is not None):
            raise VenueError(10001, "fake: TP/SL on a reduce-only order is not simulated")
        for name, level, above in (("TakeProfit", tp, side == "Buy"), ("StopLoss", sl, side == "Sell")):
            if level is not None and (level <= price if above else level >= price):
                where = "higher" if above else "lower"
                raise VenueError(10001, f"{name}:{level} set for {side} position should be {where} than base_price")
        now = self.now_ms()
        order = {
            "orderId": self._new_id(),
            "orderLinkId": link,
            "blockTradeId": "",
            "symbol": symbol,
            "price": _s(price),
            "qty": _s(qty),
            "side": side,
            "isLeverage": "",
            "positionIdx": idx,
            "orderStatus": "New",
            "createType": "CreateByUser",
            "cancelType": "UNKNOWN",
            "rejectReason": "EC_NoError",
            "avgPrice": "",
            "leavesQty": _s(qty),
            "leavesValue": _s(qty * price),
            "cumExecQty": "0",
            "cumExecValue": "0",
            "cumExecFee": "0",
            "timeInForce": tif,
            "orderType": order_type,
            "stopOrderType": "",
            "orderIv": "",
            "triggerPrice": "",
            "takeProfit": _s(tp) if tp is not None else "",
            "stopLoss": _s(sl) if sl is not None else "",
            "tpTriggerBy": "LastPrice" if tp is not None else "",
            "slTriggerBy": "LastPrice" if sl is not None else "",
            "triggerDirection": 0,
            "triggerBy": "",
            "lastPriceOnCreated": _s(last),
            "reduceOnly": reduce_only,
            "closeOnTrigger": False,
            "smpType": "None",
            "smpGroup": 0,
            "smpOrderId": "",
            "tpslMode": str(body.get("tpslMode", "")) if tp is not None or sl is not None else "",
            "tpLimitPrice": "",
            "slLimitPrice": "",
            "placeType": "",
            "createdTime": str(now),
            "updatedTime": str(now),
        }
        self._store(order)
        accepted = {"orderId": order["orderId"], "orderLinkId": link}
        if limit is not None:
            crossing = limit >= last if side == "Buy" else limit <= last
            if crossing and tif == "PostOnly":
                # https://bybit-exchange.github.io/docs/v5/enum#timeinforce: "PostOnly: if the order would be
                # filled immediately when submitted, it will be cancelled" — accepted, then cancelled, with
                # rejectReason EC_PostOnlyWillTakeLiquidity (https://bybit-exchange.github.io/docs/v5/enum#rejectreason)
                order.update(orderStatus="Cancelled", cancelType="CancelByUser",
                             rejectReason="EC_PostOnlyWillTakeLiquidity", leavesQty="0", leavesValue="0")
                return accepted, [("order", [dict(order)])]
            if not crossing:  # rests in the book until the price trades through it (see cross())
                return accepted, [("order", [dict(order)])]
            price = last  # a GTC limit that crosses takes liquidity at the market
        share = None if reduce_only else self.partial.pop(symbol, None)
        if share is not None:  # thin book: part fills, the IOC remainder is cancelled
            step = Decimal(lots["qtyStep"])
            filled = (qty * share // step) * step
            pushes = self._fill(order, filled, price, tp=tp, sl=sl) if filled > 0 else []
            for kind, rows in pushes:  # the stream says PartiallyFilled first, then Cancelled
                for row in rows:
                    if kind == "order" and row["orderId"] == order["orderId"]:
                        row["orderStatus"] = "PartiallyFilled"
            order.update(orderStatus="Cancelled", cancelType="CancelByUser", qty=_s(qty),
                         leavesQty="0", leavesValue="0", updatedTime=str(self.now_ms()))
            return accepted, [*pushes, ("order", [dict(order)])]
        pushes = self._fill(order, qty, price, tp=tp, sl=sl)
        return accepted, pushes

    def _position_idx(self, body: dict[str, Any], side: str, reduce_only: bool) -> int:
        """https://bybit-exchange.github.io/docs/v5/order/create-order: positionIdx 0 one-way mode, 1 hedge-mode
        Buy side, 2 hedge-mode Sell side; an index that does not fit the account's mode is refused with 10001
        "position idx not match position mode". In hedge mode a close is a reduce-only order on the side it
        closes (a Sell on 1 closes the long) — the fake requires reduceOnly for closes."""
        idx = body.get("positionIdx", 0)
        if not isinstance(idx, int) or idx not in (0, 1, 2) or (idx == 0) == self.hedge:
            raise VenueError(10001, "position idx not match position mode")
        if self.hedge and idx != ((1 if side == "Sell" else 2) if reduce_only else (1 if side == "Buy" else 2)):
            raise VenueError(10001, "fake: in hedge mode an entry is on its own side (Buy 1, Sell 2) and a close "
                                    "is reduce-only on the side it closes")
        return idx

    def cross(self, symbol: str) -> list[Push]:
        """Resting limit orders the last price has traded through fill at their limit price, as makers."""
        price = self.prices.get(symbol)
        pushes: list[Push] = []
        for order in [o for o in self.orders if o["symbol"] == symbol and o["orderType"] == "Limit"
                      and o["orderStatus"] in RESTING_STATUSES]:
            limit = Decimal(order["price"])
            if price is None or not (price <= limit if order["side"] == "Buy" else price >= limit):
                continue
            if (position := self.positions.get(symbol)) is not None and position.side != order["side"]:
                continue  # not simulated (see place)
            pushes += self._fill(order, Decimal(order["leavesQty"]), limit, tp=_opt(order["takeProfit"]),
                                 sl=_opt(order["stopLoss"]), maker=True)
        return pushes

    def cancel(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[Push]]:
        """https://bybit-exchange.github.io/docs/v5/order/cancel-order: by orderId or orderLinkId; only an order
        still in the book can be cancelled (filled, cancelled or unknown: 110001 "Order does not exist")."""
        if body.get("category") != "linear" or not isinstance(body.get("symbol"), str):
            raise VenueError(10001, "params error: category/symbol invalid")
        link, order_id = body.get("orderLinkId"), body.get("orderId")
        if not link and not order_id:
            raise VenueError(10001, "params error: orderId or orderLinkId is required")
        order = self.by_link.get(link) if link else self.by_id.get(str(order_id))
        if order is None or order["symbol"] != body["symbol"] or order["orderStatus"] not in RESTING_STATUSES:
            raise VenueError(110001, "Order does not exist")
        status = "PartiallyFilledCanceled" if order["orderStatus"] == "PartiallyFilled" else "Cancelled"
        order.update(orderStatus=status, cancelType="CancelByUser", leavesQty="0", leavesValue="0",
                     updatedTime=str(self.now_ms()))
        return {"orderId": order["orderId"], "orderLinkId": order["orderLinkId"]}, [("order", [dict(order)])]

    def set_margin_mode(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[Push]]:
        """https://bybit-exchange.github.io/docs/v5/account/set-margin-mode (account-wide on a unified account)."""
        mode = body.get("setMarginMode")
        if mode not in ("ISOLATED_MARGIN", "REGULAR_MARGIN", "PORTFOLIO_MARGIN"):
            raise VenueError(10001, "params error: setMarginMode invalid")
        self.margin_mode = str(mode)
        return {"reasons": []}, []

    def _store(self, order: dict[str, Any]) -> None:
        self.orders.append(order)
        self.by_id[order["orderId"]] = order
        if order["orderLinkId"]:
            self.by_link[order["orderLinkId"]] = order

    def _fill(
        self, order: dict[str, Any], qty: Decimal, price: Decimal, *, tp: Decimal | None = None,
        sl: Decimal | None = None, stop_type: str = "", maker: bool = False,
    ) -> list[Push]:
        """Fill `order` completely at `price`: executions (one seq), the position, TP/SL orders, closed P&L."""
        symbol, side = order["symbol"], order["side"]
        step = Decimal(self.instruments[symbol]["lotSizeFilter"]["qtyStep"])
        now = self.now_ms()
        seq = next(self._seq)
        position = self.positions.get(symbol)
        closing = qty if position is not None and position.side != side else Decimal(0)
        parts = self._split(qty, step)
        executions = []
        rate = MAKER_FEE_RATE if maker else FEE_RATE
        for part in parts:
            fee = part * price * rate
            execution = {
                "symbol": symbol,
                "orderId": order["orderId"],
                "orderLinkId": order["orderLinkId"],
                "side": side,
                "orderPrice": order["price"],
                "orderQty": order["qty"],
                "leavesQty": "0",
                "createType": order.get("createType", "CreateByUser"),
                "orderType": order.get("orderType", "Market"),
                "stopOrderType": stop_type,
                "execFee": _s(fee),
                "execId": str(uuid.uuid4()),
                "execPrice": _s(price),
                "execQty": _s(part),
                "execType": "Trade",
                "execValue": _s(part * price),
                "execTime": str(now),
                "feeCurrency": "USDT",
                "isMaker": maker,
                "feeRate": _s(rate),
                "tradeIv": "",
                "markIv": "",
                "markPrice": _s(price),
                "indexPrice": "",
                "underlyingPrice": "",
                "blockTradeId": "",
                "closedSize": _s(part) if closing else "0",
                "execPnl": "",
                "seq": seq,
            }
            self.executions.append(execution)
            executions.append(execution)
        fee_total = qty * price * rate
        order.update(
            orderStatus="Filled",
            avgPrice=_s(price),
            cumExecQty=_s(qty),
            cumExecValue=_s(qty * price),
            cumExecFee=_s(fee_total),
            leavesQty="0",
            leavesValue="0",
            updatedTime=str(now),
        )
        if position is None:
            self.wallet_balance -= fee_total
            position = self.positions[symbol] = _Pos(
                symbol, side, qty, price, self.leverage.get(symbol, Decimal(10)), tp, sl, now, now, seq,
                idx=int(order.get("positionIdx", 0)),
            )
        elif not closing:
            self.wallet_balance -= fee_total
            position.avg = (position.avg * position.size + price * qty) / (position.size + qty)
            position.size += qty
            position.tp = tp if tp is not None else position.tp
            position.sl = sl if sl is not None else position.sl
        else:
            direction = 1 if position.side == "Buy" else -1
            gross = (price - position.avg) * qty * direction
            entry_fee = qty * position.avg * FEE_RATE
            self.wallet_balance += gross - fee_total
            position.realised += gross - fee_total
            self.closed_pnl.append(
                {
                    "symbol": symbol,
                    "orderId": order["orderId"],
                    "side": side,
                    "qty": order["qty"],
                    "orderPrice": order["price"],
                    "orderType": "Market",
                    "execType": "Trade",
                    "closedSize": _s(qty),
                    "cumEntryValue": _s(qty * position.avg),
                    "avgEntryPrice": _s(position.avg),
                    "cumExitValue": _s(qty * price),
                    "avgExitPrice": _s(price),
                    "closedPnl": _s(gross - fee_total - entry_fee),
                    "fillCount": str(len(parts)),
                    "leverage": _s(position.leverage),
                    "createdTime": str(now),
                    "updatedTime": str(now),
                }
            )
            position.size -= qty
        position.updated_ms = now
        position.seq = seq
        flat = position.size == 0
        row = self.position_row(position)
        if flat:
            del self.positions[symbol]
        changed = self._sync_tpsl(symbol)
        return [("order", [dict(order)]), *([("order", changed)] if changed else []),
                ("execution", [dict(e) for e in executions]), ("position", [row])]

    def _split(self, qty: Decimal, step: Decimal) -> list[Decimal]:
        units = int(qty / step)
        parts = max(1, self.fill_parts)
        if parts == 1 or units < parts:
            return [qty]
        piece = (units // parts) * step
        return [piece] * (parts - 1) + [qty - piece * (parts - 1)]

    def _sync_tpsl(self, symbol: str) -> list[dict[str, Any]]:
        """Position TP/SL show as Untriggered conditional orders (qty 0, empty link id); deactivated when gone."""
        position = self.positions.get(symbol)
        changed = []
        now = str(self.now_ms())
        for kind in ("TakeProfit", "StopLoss"):
            level = None if position is None else position.tp if kind == "TakeProfit" else position.sl
            order = self.conditional.get((symbol, kind))
            if level is None or position is None:
                if order is not None:
                    order.update(orderStatus="Deactivated", updatedTime=now)
                    del self.conditional[(symbol, kind)]
                    changed.append(dict(order))
                continue
            closing_side = "Sell" if position.side == "Buy" else "Buy"
            if order is not None and order["triggerPrice"] == _s(level) and order["side"] == closing_side:
                continue
            if order is None:
                order = {
                    "orderId": self._new_id(), "orderLinkId": "", "blockTradeId": "", "symbol": symbol,
                    "price": "0", "qty": "0", "side": closing_side, "isLeverage": "", "positionIdx": position.idx,
                    "orderStatus": "Untriggered", "createType": f"CreateBy{kind}", "cancelType": "UNKNOWN",
                    "rejectReason": "EC_NoError", "avgPrice": "", "leavesQty": "0", "leavesValue": "0",
                    "cumExecQty": "0", "cumExecValue": "0", "cumExecFee": "0", "timeInForce": "IOC",
                    "orderType": "Market", "stopOrderType": kind, "orderIv": "", "triggerPrice": _s(level),
                    "takeProfit": "", "stopLoss": "", "tpTriggerBy": "", "slTriggerBy": "",
                    "triggerDirection": 1 if (kind == "TakeProfit") == (position.side == "Buy") else 2,
                    "triggerBy": "LastPrice", "lastPriceOnCreated": _s(self.prices.get(symbol, Decimal(0))),
                    "reduceOnly": True, "closeOnTrigger": True, "smpType": "None", "smpGroup": 0, "smpOrderId": "",
                    "tpslMode": "Full", "tpLimitPrice": "", "slLimitPrice": "", "placeType": "",
                    "createdTime": now, "updatedTime": now,
                }
                self._store(order)
                self.conditional[(symbol, kind)] = order
            else:
                order.update(triggerPrice=_s(level), side=closing_side, updatedTime=now)
            changed.append(dict(order))
        return changed

    def close_by(self, symbol: str, kind: str, price: Decimal | None) -> tuple[dict[str, Any], list[Push]]:
        """The position's TP or SL triggers: its conditional order fills the whole position at `price`
        (default: the TP/SL level), the other one is deactivated, the position is gone."""
        if kind not in ("TakeProfit", "StopLoss"):
            raise ValueError("kind must be TakeProfit or StopLoss")
        position = self.positions.get(symbol)
        if position is None:
            raise ValueError(f"no {symbol} position to close")
        level = position.tp if kind == "TakeProfit" else position.sl
        price = price if price is not None else level
        if price is None:
            raise ValueError(f"the {symbol} position has no {kind}")
        order = self.conditional.pop((symbol, kind), None)
        if order is None:
            raise ValueError(f"no {kind} order for {symbol}")
        self.prices[symbol] = price
        order.update(qty=_s(position.size), orderStatus="Triggered")
        pushes = self._fill(order, position.size, price, stop_type=kind)
        return dict(self.executions[-1]), pushes

    def settle_funding(self, symbol: str, rate: Decimal) -> tuple[dict[str, Any], list[Push]]:
        """A funding settlement: a long pays `rate` × position value (a short receives it), as an execution row
        with execType Funding whose execFee is what the account paid."""
        position = self.positions.get(symbol)
        if position is None:
            raise ValueError(f"no {symbol} position to settle funding on")
        mark = self.prices.get(symbol, position.avg)
        direction = 1 if position.side == "Buy" else -1
        fee = position.size * mark * rate * direction
        self.wallet_balance -= fee
        row = {
            "symbol": symbol, "orderId": "", "orderLinkId": "", "side": position.side, "orderPrice": "0",
            "orderQty": "0", "leavesQty": "0", "createType": "", "orderType": "UNKNOWN", "stopOrderType": "",
            "execFee": _s(fee), "execId": str(uuid.uuid4()), "execPrice": _s(mark), "execQty": _s(position.size),
            "execType": "Funding", "execValue": _s(position.size * mark), "execTime": str(self.now_ms()),
            "feeCurrency": "USDT", "isMaker": False, "feeRate": _s(rate), "tradeIv": "", "markIv": "",
            "markPrice": _s(mark), "indexPrice": "", "underlyingPrice": "", "blockTradeId": "", "closedSize": "0",
            "execPnl": "", "seq": next(self._seq),
        }
        self.executions.append(row)
        return dict(row), [("execution", [dict(row)])]

    def set_leverage(self, body: dict[str, Any]) -> None:
        symbol = body.get("symbol")
        if body.get("category") != "linear" or not isinstance(symbol, str) or symbol not in self.instruments:
            raise VenueError(10001, "params error: symbol invalid")
        buy, sell = body.get("buyLeverage"), body.get("sellLeverage")
        # https://bybit-exchange.github.io/docs/v5/position/leverage: one-way mode needs buyLeverage == sellLeverage
        if buy != sell and not self.hedge:
            raise VenueError(10001, "buy leverage must be equal to sell leverage in one-way mode")
        leverage = self._decimal(buy, "buyLeverage")
        if not Decimal(1) <= leverage <= Decimal(100):
            raise VenueError(10001, "leverage invalid")
        if self.leverage.get(symbol, Decimal(10)) == leverage:
            raise VenueError(110043, "Set leverage not modified")
        self.leverage[symbol] = leverage
        self.margin_mode_by_symbol[symbol] = self.margin_mode
        if symbol in self.positions:
            self.positions[symbol].leverage = leverage

    def trading_stop(self, body: dict[str, Any]) -> list[Push]:
        """POST /v5/position/trading-stop: move a position's stop-loss (tpslMode Full)."""
        symbol = body.get("symbol")
        if body.get("category") != "linear" or not isinstance(symbol, str) or symbol not in self.instruments:
            raise VenueError(10001, "params error: symbol invalid")
        position = self.positions.get(symbol)
        if position is None:
            raise VenueError(10001, "can not set tp/sl/ts for zero position")
        # https://bybit-exchange.github.io/docs/v5/position/trading-stop: positionIdx names the position
        if body.get("positionIdx", 0) != position.idx:
            raise VenueError(10001, "position idx not match position mode")
        if "stopLoss" in body:
            level = self._decimal(body["stopLoss"], "stopLoss")
            tick = Decimal(self.instruments[symbol]["priceFilter"]["tickSize"])
            if level % tick:
                raise VenueError(10001, "stopLoss is not a multiple of tickSize")
            position.sl = level if level > 0 else None
        changed = self._sync_tpsl(symbol)
        return [("order", changed)] if changed else []

    # -- rows -----------------------------------------------------------------------------------------

    def position_row(self, position: _Pos) -> dict[str, Any]:
        flat = position.size == 0
        mark = self.prices.get(position.symbol, position.avg)
        direction = 1 if position.side == "Buy" else -1
        return {
            "positionIdx": position.idx,
            "riskId": 1,
            "riskLimitValue": "2000000",
            "symbol": position.symbol,
            "side": "" if flat else position.side,
            "size": _s(position.size),
            "avgPrice": "0" if flat else _s(position.avg),
            "positionValue": _s(position.size * position.avg),
            "tradeMode": 0,
            "autoAddMargin": 0,
            "positionStatus": "Normal",
            "leverage": _s(position.leverage),
            "markPrice": _s(mark),
            "liqPrice": "",
            "bustPrice": "",
            "positionIM": _s(position.size * position.avg / position.leverage),
            "positionMM": "0",
            "positionBalance": "0",
            "takeProfit": "" if flat or position.tp is None else _s(position.tp),
            "stopLoss": "" if flat or position.sl is None else _s(position.sl),
            "trailingStop": "0",
            "sessionAvgPrice": "",
            "unrealisedPnl": _s((mark - position.avg) * position.size * direction),
            "curRealisedPnl": _s(position.realised),
            "cumRealisedPnl": _s(position.realised),
            "adlRankIndicator": 2,
            "createdTime": str(position.created_ms),
            "updatedTime": str(position.updated_ms),
            "seq": position.seq,
            "isReduceOnly": False,
            "mmrSysUpdatedTime": "",
            "leverageSysUpdatedTime": "",
            "tpslMode": "Full",
        }

    def wallet_row(self) -> dict[str, Any]:
        upl = sum((Decimal(self.position_row(p)["unrealisedPnl"]) for p in self.positions.values()), Decimal(0))
        margin = sum((p.size * p.avg / p.leverage for p in self.positions.values()), Decimal(0))
        equity = self.wallet_balance + upl
        return {
            "accountType": "UNIFIED",
            "accountIMRate": "0",
            "accountMMRate": "0",
            "accountLTV": "0",
            "totalEquity": _s(equity),
            "totalWalletBalance": _s(self.wallet_balance),
            "totalMarginBalance": _s(equity),
            "totalAvailableBalance": _s(equity - margin),
            "totalPerpUPL": _s(upl),
            "totalInitialMargin": _s(margin),
            "totalMaintenanceMargin": "0",
            "coin": [
                {
                    "coin": "USDT",
                    "equity": _s(equity),
                    "walletBalance": _s(self.wallet_balance),
                    "unrealisedPnl": _s(upl),
                    "totalPositionIM": _s(margin),
                    "cumRealisedPnl": "0",
                    "usdValue": _s(equity),
                }
            ],
        }

    @staticmethod
    def _decimal(value: Any, name: str) -> Decimal:
        try:
            out = Decimal(str(value))
        except ArithmeticError:
            raise VenueError(10001, f"params error: {name} invalid") from None
        if not out.is_finite():
            raise VenueError(10001, f"params error: {name} invalid")
        return out

    def _level(self, body: dict[str, Any], name: str, tick: Decimal) -> Decimal | None:
        raw = body.get(name)
        if raw in (None, "", "0"):
            return None
        level = self._decimal(raw, name)
        if level <= 0 or level % tick != 0:
            raise VenueError(10001, f"params error: {name} {raw} is not on the tick size {tick}")
        return level


def _opt(value: str) -> Decimal | None:
    return Decimal(value) if value not in ("", "0") else None


def _time_window(q: dict[str, str], now_ms: int) -> tuple[int, int]:
    """Bybit's startTime/endTime rules: default the last 7 days; one end given, 7 days from it; both, <= 7 days."""
    try:
        start = int(q["startTime"]) if "startTime" in q else None
        end = int(q["endTime"]) if "endTime" in q else None
    except ValueError:
        raise VenueError(10001, "params error: startTime/endTime invalid") from None
    if start is None and end is None:
        return now_ms - WEEK_MS, now_ms
    if start is None:
        assert end is not None
        return end - WEEK_MS, end
    if end is None:
        return start, start + WEEK_MS
    if end < start or end - start > WEEK_MS:
        raise VenueError(10001, "params error: The time range between startTime and endTime cannot exceed 7 days")
    return start, end


def _page(rows: list[dict[str, Any]], q: dict[str, str], *, default: int, maximum: int) -> tuple[list[Any], str]:
    """One cursor page: (rows, nextPageCursor); the cursor is an opaque offset."""
    try:
        limit = int(q.get("limit", default))
    except ValueError:
        raise VenueError(10001, "params error: limit invalid") from None
    if not 1 <= limit <= maximum:
        raise VenueError(10001, f"params error: limit must be in [1, {maximum}]")
    cursor = q.get("cursor", "")
    if cursor and not (cursor.startswith("page") and cursor[4:].isdigit()):
        raise VenueError(10001, "params error: cursor invalid")
    offset = int(cursor[4:]) if cursor else 0
    end = offset + limit
    return rows[offset:end], f"page{end}" if end < len(rows) else ""


def _matches(row: dict[str, Any], q: dict[str, str]) -> bool:
    for name in ("symbol", "orderId", "orderLinkId"):
        if name in q and row.get(name) != q[name]:
            return False
    if "settleCoin" in q and not str(row.get("symbol", "")).endswith(q["settleCoin"]):
        return False
    return "baseCoin" not in q or str(row.get("symbol", "")).startswith(q["baseCoin"])


def _ws_entry(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """A REST row as the private stream writes it (category added; a position says entryPrice)."""
    entry = {**row, "category": "linear"}
    if kind == "position":
        entry["entryPrice"] = entry.pop("avgPrice", "0")
    return entry


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
        self.unsubscribe_requests: list[list[str]] = []
        self.connection_topics: list[set[str]] = []  # per accepted connection, in order
        self.pings = 0
        self.kline_requests: list[dict[str, str]] = []
        # private side: the account (guarded by _vlock), faults, the private connections
        self.venue = _Venue(self._clock)
        self._vlock = threading.RLock()
        self._private_conns: set[_Conn] = set()
        self._faults: dict[str, deque[Fault]] = {}
        self._lagging: Counter[str] = Counter()
        self._create_times: deque[float] = deque()
        self.order_rate_limit: int | None = 10  # creates per window, as Bybit's default tier for linear
        self.order_rate_window = 0.9  # a touch under a second: loopback jitter must not fail a compliant client
        self.auth_refused = False
        # what the private side saw, for assertions
        self.create_requests: list[CreateRecord] = []
        self.funding_history: dict[str, list[tuple[int, Decimal]]] = {}  # the public funding history served
        self.funding_requests = 0
        self.private_requests: list[tuple[str, str, dict[str, Any]]] = []  # (method, path, params/body)
        self.api_keys_seen: Counter[str] = Counter()
        self.leverage_requests: list[dict[str, Any]] = []
        self.instrument_requests: list[dict[str, str]] = []
        self.rate_limited = 0
        self.private_connections_seen = 0
        self.private_refused = 0  # handshakes answered 503 while refuse_connections() was on
        self.private_auth_keys: list[str] = []
        self.private_subscribe_requests: list[list[str]] = []

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

    @property
    def private_ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/v5/private"

    def live_settings(self, folder: Path, database_url: str) -> Settings:
        """The settings of a live desk trading on this fake (test keys; no candle feed: the tests push candles),
        its data under `folder`."""
        (folder / "empty").mkdir(exist_ok=True)
        return load_settings(
            database_url=database_url, data_dir=folder / "var", trading_mode="live",
            bybit_api_key="pdTestKey0123456789", bybit_api_secret="pdTestSecret-abcdefghijklmnopqrstuv",
            live_trading_confirm="yes", market_feed="replay", feed_data=folder / "empty", bybit_rest_url=self.url,
            bybit_private_ws_url=self.private_ws_url)

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

    def push_messages(self, messages: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Push many (topic, JSON object) messages in one round on the server's loop (a benchmark's load)."""
        return self._call(self._send_many([(topic, json.dumps(body)) for topic, body in messages]))

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

    def go_silent(self, silent: bool = True, *, private: bool = False) -> None:
        """Silence the current connections (public, or with private=True the private ones): no pushes, replies
        or pongs; the socket stays open. New connections are served normally; go_silent(False) unmutes."""
        for conn in list(self._private_conns if private else self._conns):
            conn.muted = silent

    def refuse_connections(self, refuse: bool = True) -> None:
        """Answer new WebSocket handshakes (public and private) with HTTP 503 (an outage)."""
        self.refusing = refuse

    def subscribers(self, topic: str) -> int:
        """Open, unmuted connections currently subscribed to `topic`."""
        return sum(1 for c in list(self._conns) if topic in c.topics and not c.muted and not c.ws.closed)

    @property
    def open_connections(self) -> int:
        return sum(1 for c in list(self._conns) if not c.ws.closed)

    def topics_now(self) -> set[str]:
        """The subscription state: every topic some open public connection is subscribed to now."""
        return {t for c in list(self._conns) if not c.ws.closed for t in list(c.topics)}

    def topics_per_connection(self) -> list[set[str]]:
        return [set(c.topics) for c in list(self._conns) if not c.ws.closed]

    # -- test controls: the market directory (tickers, instruments) -------------------------------------

    def list_symbol(self, symbol: str, *, turnover: Decimal | str | int, launched: datetime | None = None,
                    price: Decimal | str = "1", status: str = "Trading", tick: str = "0.0001", qty_step: str = "1",
                    min_qty: str = "1") -> None:
        """A linear USDT perpetual in instruments-info (launched at `launched`) with a ticker's turnover24h."""
        launch_ms = dt_to_ms(launched) if launched is not None else 1585526400000
        with self._vlock:
            self.venue.instruments[symbol] = instrument_row(symbol, tick, qty_step, min_qty, "5", status, launch_ms)
            self.venue.prices.setdefault(symbol, Decimal(str(price)))
            self.venue.turnovers[symbol] = Decimal(str(turnover))

    def set_turnover(self, symbol: str, turnover: Decimal | str | int) -> None:
        with self._vlock:
            self.venue.turnovers[symbol] = Decimal(str(turnover))

    # -- test controls: the private side ----------------------------------------------------------------

    def set_price(self, symbol: str, price: Decimal | str) -> None:
        """The last (and mark) price: what market orders fill at and tickers report. Resting limit orders it
        trades through fill (as makers, at their price), pushed on the private stream."""
        if self._loop is None:
            with self._vlock:
                self.venue.prices[symbol] = Decimal(str(price))
            return
        self._call(self._set_price(symbol, Decimal(str(price))))

    async def _set_price(self, symbol: str, price: Decimal) -> None:
        with self._vlock:
            self.venue.prices[symbol] = price
            pushes = self.venue.cross(symbol)
        await self._push_private(pushes)

    def set_position_mode(self, hedge: bool) -> None:
        """The account's position mode for USDT perpetuals: hedge (positionIdx 1/2) or one-way (0)."""
        with self._vlock:
            self.venue.hedge = hedge

    @property
    def margin_mode(self) -> str:
        with self._vlock:
            return self.venue.margin_mode

    def margin_mode_of(self, symbol: str) -> str | None:
        """The account's margin mode when the symbol's leverage was last set (None: never set)."""
        with self._vlock:
            return self.venue.margin_mode_by_symbol.get(symbol)

    def resting(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Limit orders waiting in the book."""
        with self._vlock:
            return [dict(o) for o in self.venue.orders if o["orderType"] == "Limit"
                    and o["orderStatus"] in RESTING_STATUSES and (symbol is None or o["symbol"] == symbol)]

    def set_instrument(
        self, symbol: str, tick: str, qty_step: str, min_qty: str, min_notional: str = "5", status: str = "Trading"
    ) -> None:
        with self._vlock:
            self.venue.instruments[symbol] = instrument_row(symbol, tick, qty_step, min_qty, min_notional, status)

    def set_funding_history(self, symbol: str, rows: Iterable[tuple[int, Decimal | str]]) -> None:
        """The settlements (ms, rate) the public funding history serves for `symbol`."""
        with self._vlock:
            self.funding_history[symbol] = [(int(ms), Decimal(str(rate))) for ms, rate in rows]

    def set_wallet_balance(self, balance: Decimal | str) -> None:
        with self._vlock:
            self.venue.wallet_balance = Decimal(str(balance))

    def set_fill_parts(self, parts: int) -> None:
        """Market fills come as `parts` executions sharing one seq (an order sweeping several makers)."""
        with self._vlock:
            self.venue.fill_parts = parts

    def set_partial_fill(self, symbol: str, ratio: Decimal | str) -> None:
        """The next entry on `symbol` fills only `ratio` of its qty (rounded down to the step); the rest is
        cancelled, as an IOC market order does on a thin book."""
        with self._vlock:
            self.venue.partial[symbol] = Decimal(str(ratio))

    def settle_funding(self, symbol: str, rate: Decimal | str, *, push: bool = True) -> dict[str, Any]:
        """A funding settlement on the open position (see _Venue.settle_funding); returns the execution row."""
        return self._call(self._settle_funding(symbol, Decimal(str(rate)), push))

    def fail_next(
        self, path: str, kind: str, *, act: bool | None = None, delay: float = 2.0, count: int = 1
    ) -> None:
        """The next `count` requests to `path` fail: "timeout" (the answer comes after `delay` seconds, past the
        client's timeout), "5xx" (HTTP 502), "403" (Bybit's IP ban), "drop" (the connection is aborted).
        act: whether the venue handles the request before the failure (default: only for "timeout", the
        classic "timed out but the order went through")."""
        if kind not in ("timeout", "5xx", "403", "drop"):
            raise ValueError(f"unknown fault {kind!r}")
        fault = Fault(kind, kind == "timeout" if act is None else act, delay)
        with self._vlock:
            self._faults.setdefault(path, deque()).extend([fault] * count)

    def clear_faults(self) -> None:
        """Forget the faults not yet used."""
        with self._vlock:
            self._faults.clear()

    def lag_lookups(self, order_link_id: str, requests: int = 2) -> None:
        """The next `requests` order queries (realtime or history) filtering on this link id find nothing, as if
        the query side lagged behind the matching engine. A broker's lookup is two requests."""
        with self._vlock:
            self._lagging[order_link_id] += requests

    def place_directly(self, body: dict[str, Any]) -> dict[str, Any]:
        """Place an order as another process (or an earlier run) did: not recorded in create_requests."""
        return self._call(self._place_directly({"category": "linear", "positionIdx": 0, **body}))

    def close_position_by(
        self, symbol: str, kind: str = "TakeProfit", price: Decimal | str | None = None, *, push: bool = True
    ) -> dict[str, Any]:
        """The venue closes the position by its TP ("TakeProfit") or SL ("StopLoss") at `price` (default: the
        level): the conditional order fills, an execution with that stopOrderType and closedSize appears, a
        closed-pnl row is written, the other conditional order is deactivated and the position is gone.
        push=False (or no private connection): nobody hears of it, as while the desk is down.
        Returns the execution row."""
        level = Decimal(str(price)) if price is not None else None
        return self._call(self._close_position_by(symbol, kind, level, push))

    def creates(self, order_link_id: str | None = None) -> list[CreateRecord]:
        """Every create request received (all outcomes), optionally for one link id."""
        return [r for r in list(self.create_requests) if order_link_id is None or r.link == order_link_id]

    def orders(self, order_link_id: str | None = None) -> list[dict[str, Any]]:
        """Orders the venue holds (accepted creates and TP/SL orders), oldest first, as REST rows."""
        with self._vlock:
            return [dict(o) for o in self.venue.orders if order_link_id is None or o["orderLinkId"] == order_link_id]

    def execution_rows(self, *, order_link_id: str | None = None, symbol: str | None = None) -> list[dict[str, Any]]:
        with self._vlock:
            return [
                dict(e)
                for e in self.venue.executions
                if (order_link_id is None or e["orderLinkId"] == order_link_id)
                and (symbol is None or e["symbol"] == symbol)
            ]

    def position(self, symbol: str) -> dict[str, Any] | None:
        with self._vlock:
            found = self.venue.positions.get(symbol)
            return self.venue.position_row(found) if found is not None else None

    def leverage_of(self, symbol: str) -> Decimal:
        with self._vlock:
            return self.venue.leverage.get(symbol, Decimal(10))

    def requests_to(self, path: str) -> int:
        return sum(1 for _, p, _ in list(self.private_requests) if p == path)

    def push_private(self, kind: str, rows: list[dict[str, Any]]) -> int:
        """Push REST-format rows (e.g. from orders() or execution_rows()) on the private topic `kind`
        (order, execution, position), as the stream writes them; returns the messages sent."""
        return self._call(self._push_private([(kind, rows)]))

    def push_private_message(self, topic: str, message: dict[str, Any] | str) -> int:
        """Send a raw message to the private connections subscribed to `topic`."""
        payload = message if isinstance(message, str) else json.dumps(message)
        return self._call(self._send_private(payload, topic))

    def push_private_raw(self, payload: str | dict[str, Any] | list[Any]) -> int:
        """Send anything to every authenticated private connection."""
        return self._call(self._send_private(payload if isinstance(payload, str) else json.dumps(payload), None))

    def private_subscribers(self, topic: str) -> int:
        return sum(
            1 for c in list(self._private_conns) if c.authed and topic in c.topics and not c.ws.closed
        )

    @property
    def open_private_connections(self) -> int:
        return sum(1 for c in list(self._private_conns) if not c.ws.closed)

    def drop_private_connections(self, *, abrupt: bool = False) -> int:
        return self._call(self._drop(abrupt, conns=list(self._private_conns)))

    # -- server -----------------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "FakeBybit is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/v5/public/linear", self._ws_public)
        app.router.add_get("/v5/market/kline", self._kline)
        app.router.add_get("/v5/market/instruments-info", self._instruments_info)
        app.router.add_get("/v5/market/tickers", self._tickers)
        app.router.add_get("/v5/market/funding/history", self._funding_history)
        app.router.add_get("/v5/private", self._ws_private)
        private: tuple[tuple[str, str, Callable[[dict[str, Any]], tuple[dict[str, Any], list[Push]]]], ...] = (
            ("POST", "/v5/order/create", self._create),
            ("POST", "/v5/position/set-leverage", self._set_leverage),
            ("POST", "/v5/order/cancel", lambda body: self.venue.cancel(body)),
            ("POST", "/v5/account/set-margin-mode", lambda body: self.venue.set_margin_mode(body)),
            ("POST", "/v5/position/trading-stop", self._trading_stop),
            ("GET", "/v5/order/realtime", self._realtime),
            ("GET", "/v5/order/history", self._history),
            ("GET", "/v5/position/list", self._position_list),
            ("GET", "/v5/account/wallet-balance", self._wallet),
            ("GET", "/v5/execution/list", self._execution_list),
            ("GET", "/v5/position/closed-pnl", self._closed_pnl_list),
        )
        for method, path, handler in private:
            app.router.add_route(method, path, self._private_route(handler))
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        await self._drop(abrupt=True)
        await self._drop(abrupt=True, conns=list(self._private_conns))
        if self._runner is not None:
            await self._runner.cleanup()

    async def _ws_public(self, request: web.Request) -> web.StreamResponse:
        if self.refusing:
            return web.Response(status=503, text="service unavailable")
        return await self._websocket(request, self._conns, self._command, opened=self._public_opened)

    def _public_opened(self, conn: _Conn) -> None:
        self.connections_seen += 1
        self.connection_topics.append(conn.topics)

    async def _websocket(self, request: web.Request, conns: set[_Conn],
                         command: Callable[[_Conn, str], Awaitable[None]],
                         opened: Callable[[_Conn], None]) -> web.WebSocketResponse:
        """One WebSocket connection: registered in `conns` while open, each text frame to `command`."""
        # autoping off: pings are answered by hand so that a silenced connection really says nothing
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        conn = _Conn(id=uuid.uuid4().hex[:16], ws=ws, request=request)
        conns.add(conn)
        opened(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    if not conn.muted:
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await command(conn, msg.data)
        finally:
            conns.discard(conn)
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
            # https://bybit-exchange.github.io/docs/v5/ws/connect: subscribe on an open connection adds its topics;
            # the reply echoes req_id with op "subscribe" and success
            self.subscribe_requests.append(args)
            self.subscribed.update(args)
            reply = {"success": True, "ret_msg": "", "conn_id": conn.id, "req_id": req_id, "op": "subscribe"}
        elif op == "unsubscribe":
            # https://bybit-exchange.github.io/docs/v5/ws/connect: unsubscribe removes the named topics from this
            # connection only; the connection stays open and its other topics keep coming
            args = [str(a) for a in request.get("args") or []]
            self.unsubscribe_requests.append(args)
            conn.topics.difference_update(args)
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

    async def _drop(self, abrupt: bool, conns: list[_Conn] | None = None) -> int:
        conns = list(self._conns) if conns is None else conns
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

    def _error(self, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(
            {"retCode": code, "retMsg": message, "result": {}, "retExtInfo": {}, "time": dt_to_ms(self._clock())},
            headers=headers,
        )

    def _ok(self, result: dict[str, Any]) -> web.Response:
        return web.json_response(
            {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": dt_to_ms(self._clock())}
        )

    # -- public instruments and tickers ---------------------------------------------------------------

    async def _instruments_info(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.instrument_requests.append(q)
        try:
            if q.get("category") != "linear":
                raise VenueError(10001, "params error: category only support linear")
            with self._vlock:
                rows = [
                    dict(r) for sym, r in sorted(self.venue.instruments.items())
                    if ("symbol" not in q or sym == q["symbol"]) and ("status" not in q or r["status"] == q["status"])
                ]
            page, cursor = _page(rows, q, default=500, maximum=1000)
        except VenueError as exc:
            return self._error(exc.code, exc.message)
        return self._ok({"category": "linear", "list": page, "nextPageCursor": cursor})

    async def _tickers(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        if q.get("category") != "linear":
            return self._error(10001, "params error: category only support linear")
        with self._vlock:
            prices = dict(self.venue.prices)
            turnovers = dict(self.venue.turnovers)
        # https://bybit-exchange.github.io/docs/v5/market/tickers: category linear lists every symbol (no pages);
        # turnover24h is the quote-currency turnover of the last 24 h, as a string
        if "symbol" in q and q["symbol"] not in prices:
            return self._error(10001, "params error: symbol invalid")
        rows = [
            {
                "symbol": sym, "lastPrice": _s(p), "markPrice": _s(p), "indexPrice": _s(p), "bid1Price": _s(p),
                "ask1Price": _s(p), "bid1Size": "1", "ask1Size": "1", "prevPrice24h": _s(p), "price24hPcnt": "0",
                "highPrice24h": _s(p), "lowPrice24h": _s(p), "volume24h": "0",
                "turnover24h": _s(turnovers.get(sym, Decimal(0))),
                "openInterest": "0", "fundingRate": "0.0001", "nextFundingTime": "0",
            }
            for sym, p in sorted(prices.items())
            if "symbol" not in q or sym == q["symbol"]
        ]
        return self._ok({"category": "linear", "list": rows})

    async def _funding_history(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        if q.get("category") != "linear":
            return self._error(10001, "params error: category only support linear")
        symbol = q.get("symbol", "")
        if "startTime" in q and "endTime" not in q:
            return self._error(10001, "params error: endTime is required with startTime")
        try:
            limit = int(q.get("limit", "200"))
            end = int(q["endTime"]) if "endTime" in q else self.venue.now_ms()
            start = int(q.get("startTime", "0"))
        except ValueError:
            return self._error(10001, "params error")
        if not 1 <= limit <= 200:
            return self._error(10001, "params error: limit must be in [1, 200]")
        with self._vlock:
            rows = [(ms, rate) for ms, rate in self.funding_history.get(symbol, []) if start <= ms <= end]
        page = sorted(rows, reverse=True)[:limit]
        self.funding_requests += 1
        return self._ok({"category": "linear", "list": [
            {"symbol": symbol, "fundingRate": _s(rate), "fundingRateTimestamp": str(ms)} for ms, rate in page]})

    # -- private REST ---------------------------------------------------------------------------------

    def _private_route(
        self, handler: Callable[[dict[str, Any]], tuple[dict[str, Any], list[Push]]]
    ) -> Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]:
        async def route(request: web.Request) -> web.StreamResponse:
            if request.method == "GET":
                body: dict[str, Any] = dict(request.query)
            else:
                try:
                    body = json.loads(await request.text() or "{}")
                except ValueError:
                    return self._error(10001, "params error: the body is not JSON")
            self.private_requests.append((request.method, request.path, body))
            record = None
            if request.path == "/v5/order/create":
                record = CreateRecord(body, asyncio.get_running_loop().time())
                self.create_requests.append(record)
            key = request.headers.get("X-BAPI-API-KEY")
            if not key or not request.headers.get("X-BAPI-SIGN") or not request.headers.get("X-BAPI-TIMESTAMP"):
                if record is not None:
                    record.ret_code = 10003
                return self._error(10003, "API key is invalid.")
            self.api_keys_seen[key] += 1
            with self._vlock:
                queue = self._faults.get(request.path)
                fault = queue.popleft() if queue else None
            if fault is not None:
                if record is not None:
                    record.fault = fault.kind
                if not fault.act:
                    return await self._faulted(request, fault, None)
            code, response, pushes = self._answer(handler, body)
            if record is not None:
                record.ret_code = code
            if pushes:
                await self._push_private(pushes)
            if fault is not None:
                return await self._faulted(request, fault, response)
            return response

        return route

    def _answer(
        self, handler: Callable[[dict[str, Any]], tuple[dict[str, Any], list[Push]]], body: dict[str, Any]
    ) -> tuple[int, web.Response, list[Push]]:
        try:
            with self._vlock:
                result, pushes = handler(body)
        except VenueError as exc:
            headers = None
            if exc.code == 10006:
                reset = dt_to_ms(datetime.now(UTC)) + 1000
                headers = {"X-Bapi-Limit": str(self.order_rate_limit), "X-Bapi-Limit-Status": "0",
                           "X-Bapi-Limit-Reset-Timestamp": str(reset)}
            return exc.code, self._error(exc.code, exc.message, headers), []
        return 0, self._ok(result), pushes

    async def _faulted(self, request: web.Request, fault: Fault, response: web.Response | None) -> web.StreamResponse:
        if fault.kind == "timeout":
            await asyncio.sleep(fault.delay)  # the client gave up long ago
            return response if response is not None else web.Response(status=504, text="gateway timeout")
        if fault.kind == "5xx":
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if fault.kind == "403":
            return web.Response(status=403, text="")
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)

    def _create(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[Push]]:
        if self.order_rate_limit is not None:
            now = asyncio.get_running_loop().time()
            while self._create_times and now - self._create_times[0] >= self.order_rate_window:
                self._create_times.popleft()
            if len(self._create_times) >= self.order_rate_limit:
                self.rate_limited += 1
                raise VenueError(10006, "Too many visits!")
            self._create_times.append(now)
        return self.venue.place(body)

    def _set_leverage(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[Push]]:
        self.leverage_requests.append(dict(body))
        self.venue.set_leverage(body)
        return {}, []

    def _trading_stop(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[Push]]:
        return {}, self.venue.trading_stop(body)

    def _order_rows(self, q: dict[str, Any], *, recent_only: bool) -> list[dict[str, Any]]:
        if q.get("category") != "linear":
            raise VenueError(10001, "params error: category only support linear")
        link = q.get("orderLinkId")
        if link and self._lagging[link] > 0:
            self._lagging[link] -= 1
            return []
        orders = self.venue.orders
        if recent_only:  # the open ones and the latest closed ones
            closed = [o for o in orders if o["orderStatus"] not in OPEN_ORDER_STATUSES][-RECENT_CLOSED:]
            keep = {id(o) for o in closed}
            orders = [o for o in orders if o["orderStatus"] in OPEN_ORDER_STATUSES or id(o) in keep]
        return [dict(o) for o in reversed(orders) if _matches(o, q)]  # newest first

    def _realtime(self, q: dict[str, Any]) -> tuple[dict[str, Any], list[Push]]:
        page, cursor = _page(self._order_rows(q, recent_only=True), q, default=20, maximum=50)
        return {"category": "linear", "list": page, "nextPageCursor": cursor}, []

    def _history(self, q: dict[str, Any]) -> tuple[dict[str, Any], list[Push]]:
        page, cursor = _page(self._order_rows(q, recent_only=False), q, default=20, maximum=50)
        return {"category": "linear", "list": page, "nextPageCursor": cursor}, []

    def _position_list(self, q: dict[str, Any]) -> tuple[dict[str, Any], list[Push]]:
        if q.get("category") != "linear":
            raise VenueError(10001, "params error: category only support linear")
        venue = self.venue
        if "symbol" in q:
            # https://bybit-exchange.github.io/docs/v5/position: a named symbol is answered with its position rows,
            # flat ones included: one (positionIdx 0) in one-way mode, one per side (1, 2) in hedge mode
            found = venue.positions.get(q["symbol"])
            lev = venue.leverage.get(q["symbol"], Decimal(10))
            rows = []
            for idx in ((1, 2) if venue.hedge else (0,)):
                if found is not None and found.idx == idx:
                    rows.append(venue.position_row(found))
                else:
                    flat = _Pos(q["symbol"], "", Decimal(0), Decimal(0), lev, None, None, 0, 0, 0, idx=idx)
                    rows.append(venue.position_row(flat))
        elif "settleCoin" in q:
            rows = [venue.position_row(p) for s, p in sorted(venue.positions.items()) if s.endswith(q["settleCoin"])]
        else:
            raise VenueError(10001, "Missing some parameters that must be filled in, symbol or settleCoin")
        page, cursor = _page(rows, q, default=20, maximum=200)
        return {"category": "linear", "list": page, "nextPageCursor": cursor}, []

    def _wallet(self, q: dict[str, Any]) -> tuple[dict[str, Any], list[Push]]:
        if q.get("accountType") != "UNIFIED":
            raise VenueError(10001, "accountType only support UNIFIED")
        return {"list": [self.venue.wallet_row()]}, []

    def _execution_list(self, q: dict[str, Any]) -> tuple[dict[str, Any], list[Push]]:
        if q.get("category") != "linear":
            raise VenueError(10001, "params error: category only support linear")
        start, end = _time_window(q, self.venue.now_ms())
        rows = [
            dict(e) for e in reversed(self.venue.executions)
            if start <= int(e["execTime"]) <= end and _matches(e, q)
            and ("execType" not in q or e["execType"] == q["execType"])
        ]
        page, cursor = _page(rows, q, default=50, maximum=100)
        return {"category": "linear", "list": page, "nextPageCursor": cursor}, []

    def _closed_pnl_list(self, q: dict[str, Any]) -> tuple[dict[str, Any], list[Push]]:
        if q.get("category") != "linear":
            raise VenueError(10001, "params error: category only support linear")
        start, end = _time_window(q, self.venue.now_ms())
        rows = [
            dict(r) for r in reversed(self.venue.closed_pnl)
            if start <= int(r["updatedTime"]) <= end and ("symbol" not in q or r["symbol"] == q["symbol"])
        ]
        page, cursor = _page(rows, q, default=50, maximum=100)
        return {"category": "linear", "list": page, "nextPageCursor": cursor}, []

    async def _place_directly(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._vlock:
            result, pushes = self.venue.place(body)
        await self._push_private(pushes)
        return result

    async def _settle_funding(self, symbol: str, rate: Decimal, push: bool) -> dict[str, Any]:
        with self._vlock:
            row, pushes = self.venue.settle_funding(symbol, rate)
        if push:
            await self._push_private(pushes)
        return row

    async def _close_position_by(self, symbol: str, kind: str, price: Decimal | None, push: bool) -> dict[str, Any]:
        with self._vlock:
            execution, pushes = self.venue.close_by(symbol, kind, price)
        if push:
            await self._push_private(pushes)
        return execution

    # -- the private stream ---------------------------------------------------------------------------

    async def _ws_private(self, request: web.Request) -> web.StreamResponse:
        if self.refusing:
            self.private_refused += 1
            return web.Response(status=503, text="service unavailable")
        return await self._websocket(request, self._private_conns, self._private_command, opened=self._private_opened)

    def _private_opened(self, conn: _Conn) -> None:
        self.private_connections_seen += 1

    async def _private_command(self, conn: _Conn, text: str) -> None:
        try:
            request = json.loads(text)
            op, req_id = request.get("op"), request.get("req_id", "")
        except (ValueError, AttributeError):
            await self._reply(conn, {"success": False, "ret_msg": "error:invalid json", "conn_id": conn.id})
            return
        if op == "auth":
            args = request.get("args")
            ok = (
                not self.auth_refused
                and isinstance(args, list)
                and len(args) == 3
                and isinstance(args[0], str) and bool(args[0])
                and isinstance(args[1], int)
                and isinstance(args[2], str) and bool(args[2])
            )
            if ok:
                conn.authed = True
                self.private_auth_keys.append(args[0])
            reply = {"success": ok, "ret_msg": "" if ok else "error:sign invalid", "op": "auth", "conn_id": conn.id}
            if req_id:
                reply["req_id"] = req_id
        elif op == "subscribe":
            args = [str(a) for a in request.get("args") or []]
            self.private_subscribe_requests.append(args)
            bases = {a.split(".", 1)[0] for a in args}
            known = all(a.split(".", 1)[0] in PRIVATE_TOPICS and a.count(".") <= 1 for a in args)
            mixed = any(b in args and any(a.startswith(b + ".") for a in args) for b in bases)
            if not conn.authed:
                ok, message = False, "Request not authorized"
            elif not known or not args:
                ok, message = False, f"error:handler not found,topic:{','.join(args)}"
            elif mixed:
                ok, message = False, "error:All-In-One topic and Categorised topic cannot be in the same request"
            else:
                ok, message = True, ""
                conn.topics.update(args)
            reply = {"success": ok, "ret_msg": message, "conn_id": conn.id, "req_id": req_id, "op": "subscribe"}
        elif op == "ping":
            reply = {"req_id": req_id, "op": "pong", "args": [str(dt_to_ms(datetime.now(UTC)))], "conn_id": conn.id}
        else:
            reply = {"success": False, "ret_msg": f"error:handler not found,topic:{op}", "conn_id": conn.id}
        await self._reply(conn, reply)

    async def _push_private(self, pushes: list[Push]) -> int:
        sent = 0
        for kind, rows in pushes:
            entries = [_ws_entry(kind, row) for row in rows]
            for conn in list(self._private_conns):
                topic = kind if kind in conn.topics else f"{kind}.linear" if f"{kind}.linear" in conn.topics else None
                if topic is None or not conn.authed or conn.muted or conn.ws.closed:
                    continue
                body = {"id": uuid.uuid4().hex, "topic": topic, "creationTime": self.venue.now_ms(), "data": entries}
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.send_str(json.dumps(body))
                    sent += 1
        return sent

    async def _send_private(self, payload: str, topic: str | None) -> int:
        sent = 0
        for conn in list(self._private_conns):
            if not conn.authed or conn.ws.closed or (topic is not None and topic not in conn.topics):
                continue
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.send_str(payload)
                sent += 1
        return sent
