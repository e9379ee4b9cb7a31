"""The Broker protocol every execution venue implements (paper, Bybit), and its message types.

Money crosses this boundary as `Decimal`, already on the instrument's tick and step grids. Every order
carries a deterministic `order_link_id` derived from the signal id: after a timeout, a crash or an
unknown result the desk looks the order up by that id before it would ever send it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

from core.signal import Side  # one definition of a side, beside the signal that has it

OrderSide = Literal["Buy", "Sell"]
Purpose = Literal["open", "fallback", "close", "tp", "sl"]
OrderType = Literal["Market", "Limit"]
PositionMode = Literal["one_way", "hedge"]
MarginMode = Literal["isolated", "cross"]
ENTRY_PURPOSES: frozenset[Purpose] = frozenset({"open", "fallback"})

# open: the entry (market, or a post-only limit); fallback: the market entry that follows a limit entry which
# did not fill in time (its own id, so that each of the two is sent at most once); close: a reduce-only close
# sent by the desk; tp / sl: the fills of a position's own TP/SL orders
_PURPOSE_CODE: dict[Purpose, str] = {"open": "o", "fallback": "m", "close": "c", "tp": "tp", "sl": "sl"}
_CODE_PURPOSE: dict[str, Purpose] = {v: k for k, v in _PURPOSE_CODE.items()}
TERMINAL_STATUSES = frozenset({"Filled", "Cancelled", "Rejected", "PartiallyFilledCanceled", "Deactivated"})


def order_link_id(base: str, purpose: Purpose = "open") -> str:
    """`pd-<base>-o|c|tp|sl`: ≤ 36 characters of [A-Za-z0-9_-] (Bybit's rule), the purpose encoded in it.
    The base is a signal id, or `rv<item id>` for an order a recovery decision sends."""
    link = f"pd-{base}-{_PURPOSE_CODE[purpose]}"
    if len(link) > 36:
        raise ValueError(f"order link id {link!r} is longer than Bybit's 36 characters")
    return link


def parse_link(link: str | None) -> tuple[str, Purpose] | None:
    """(base, purpose) of a link id this desk made; None for anything else (a TP/SL order has none)."""
    if not link or not link.startswith("pd-"):
        return None
    base, _, code = link[3:].rpartition("-")
    purpose = _CODE_PURPOSE.get(code)
    return (base, purpose) if base and purpose else None


class BrokerError(Exception):
    """Base of the broker's errors."""


class OrderRejected(BrokerError):
    """The order was not placed: refused locally (rounding, minimums, price sides) or by the venue (`code`)."""

    def __init__(self, message: str, *, code: int | None = None, order_link_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.order_link_id = order_link_id


class OrderUnknown(BrokerError):
    """A create may have reached the venue but no lookup could confirm it: reconcile before acting again."""


class VenueUnavailable(BrokerError):
    """The venue could not be reached (or banned this IP); nothing was placed by this call."""


def entry_side(side: Side) -> OrderSide:
    return "Buy" if side == "long" else "Sell"


def exit_side(side: Side) -> OrderSide:
    return "Sell" if side == "long" else "Buy"


def position_idx(mode: PositionMode, side: Side) -> int:
    """Bybit's positionIdx of an order on the position of `side`: 0 in one-way mode; in hedge mode 1 for the Buy
    (long) side and 2 for the Sell (short) side, closes included (a reduce-only Sell of a long is on 1)."""
    if mode == "one_way":
        return 0
    return 1 if side == "long" else 2


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An entry with its protective levels (Bybit: tpslMode Full), or a reduce-only close. An entry is a market
    order, or a post-only limit at `price` (order_type "Limit"); a market entry with `price_bound` is sent only
    while the last price is not beyond it (a long's above, a short's below: the fallback of a limit entry)."""

    bot_id: str
    signal_id: str
    symbol: str
    side: Side  # the position's side
    qty: Decimal
    leverage: Decimal
    order_link_id: str
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    reduce_only: bool = False
    order_type: OrderType = "Market"
    price: Decimal | None = None  # the limit price (Limit only)
    price_bound: Decimal | None = None  # Market only: refused when the last price is beyond it

    def __post_init__(self) -> None:
        if (self.order_type == "Limit") != (self.price is not None):
            raise ValueError("a Limit intent needs a price, and only a Limit intent has one")
        if self.order_type == "Limit" and self.reduce_only:
            raise ValueError("closes are market orders")


@dataclass(frozen=True, slots=True)
class OrderState:
    order_link_id: str
    exchange_order_id: str | None
    symbol: str
    side: OrderSide
    qty: Decimal
    status: str  # New, PartiallyFilled, Filled, Cancelled, Rejected, ... (Bybit's words)
    filled_qty: Decimal = Decimal(0)
    avg_price: Decimal | None = None
    fee: Decimal = Decimal(0)
    reduce_only: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    reject_reason: str | None = None  # why the venue refused it (Bybit's rejectReason; the paper venue's words)


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution. `exec_id` (and Bybit's `seq`) identify it: the same fill reported twice is one fill."""

    exec_id: str
    order_link_id: str | None
    exchange_order_id: str | None
    symbol: str
    side: OrderSide
    qty: Decimal
    price: Decimal
    fee: Decimal
    time: datetime
    seq: int | None = None
    reduce_only: bool = False
    stop_order_type: str | None = None  # "TakeProfit" / "StopLoss" when a position's TP/SL filled
    order_type: OrderType = "Market"  # a limit entry's fill says Limit (it paid the maker fee)


@dataclass(frozen=True, slots=True)
class FundingFee:
    """A funding settlement on a held position (Bybit: an execution row with execType Funding). `fee` is
    what the account paid (negative: received), as Bybit's execFee says; exec_id makes it count once."""

    exec_id: str
    symbol: str
    fee: Decimal
    time: datetime
    rate: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    side: Side
    qty: Decimal
    entry_price: Decimal
    leverage: Decimal
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    unrealized_pnl: Decimal = Decimal(0)
    liquidation_price: Decimal | None = None
    mark_price: Decimal | None = None
    opened_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Balance:
    equity: Decimal
    available: Decimal
    margin_used: Decimal = Decimal(0)
    unrealized_pnl: Decimal = Decimal(0)


class Broker(Protocol):
    async def open(self, intent: OrderIntent) -> OrderState:
        """Send a market entry with TP/SL (at most once per order_link_id)."""
        ...

    async def close(self, intent: OrderIntent) -> OrderState:
        """Reduce-only market close of (part of) a position."""
        ...

    async def set_stop(self, symbol: str, stop_loss: Decimal, side: Side) -> None:
        """Move the stop-loss of the `side` position (trailing stop, breakeven)."""
        ...

    async def cancel(self, intent: OrderIntent) -> OrderState | None:
        """Withdraw a resting entry; its state afterwards (filled in the meantime, or cancelled), None if unknown."""
        ...

    async def order(self, order_link_id: str) -> OrderState | None:
        """Look an order up by its link id (None: the venue never saw it)."""
        ...

    async def positions(self) -> list[Position]: ...

    async def open_orders(self) -> list[OrderState]: ...

    async def balance(self) -> Balance: ...

    async def executions(self, since: datetime) -> list[Fill]:
        """Trade fills since `since` (funding rows are not fills: see `funding`)."""
        ...

    async def funding(self, since: datetime) -> list[FundingFee]:
        """Funding settlements since `since`."""
        ...

    async def last_price(self, symbol: str) -> Decimal:
        """The symbol's last traded price (a mark for estimates)."""
        ...

    def events(self) -> AsyncIterator[Fill | FundingFee | OrderState | Position]:
        """The account's private stream, parsed: each fill, funding fee, order state and position once."""
        ...
