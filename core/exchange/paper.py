"""PaperBroker: a simulated venue driven by closed candles, for replays and paper trading on live data.

The fill model (the one place it is written down; README "Orders, fills and funding" points here):
- A market entry fills at the open of the next candle of its symbol (on the watched interval), moved
  against the trade by the slippage (bps) and rounded to the tick against it too; taker fee on every fill.
  An entry whose fill price lands at or beyond its own target or stop is not opened: the order is
  rejected ("fill beyond level") and the signal recorded as rejected — a trade that would be born dead.
- A position's stop-loss and take-profit are market orders on the venue: a candle touching a level
  fills it (with slippage); one opening beyond a level fills at that open; one touching both fills the
  stop (the phantom book's conservative rule; the watched interval is the bot's fastest).
- Funding (core/funding.py): at each settlement of the symbol's series a position held across it pays or
  receives `size × mark × rate` (mark: the last close before the settlement), booked on the trade like
  the exchange's funding rows. Settlements are applied at the start of the first candle opening at or
  after them, before that candle's fills: an entry filled at that open pays nothing for it.
- A limit entry (a bot's `entry_order: limit`) is a post-only order placed at the next open of its symbol: if
  that open is already at or through its price (a long's at or below) it would take liquidity and is cancelled,
  as Bybit cancels such a post-only order; otherwise it rests and fills at its own price, with the maker fee and
  no slippage, in the first candle whose range trades through it (a long's low below it); a candle reaching its
  price without going through does not fill it. Not filled by the end of the candle in which `entry_timeout_s`
  (from that open) runs out, it is cancelled; the trader's fallback (a market entry, bounded, or none) follows,
  as in live trading. A limit filled inside a candle that also reaches its stop is stopped in that candle.
- Liquidation is not simulated: the desk never trades without a stop and caps leverage, so the stop is
  always far nearer than the liquidation price.
- Equity = wallet balance (capital + realized PnL − fees ± funding) + unrealized PnL at the last close seen.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from core.exchange.broker import (
    Balance,
    Fill,
    FundingFee,
    OrderIntent,
    OrderState,
    Position,
    Purpose,
    Side,
    entry_side,
    exit_side,
    order_link_id,
)
from core.funding import FundingSchedule, funding_fee
from core.instruments import Instruments
from core.market.candle import Candle, dt_to_ms, ms_to_dt

VenueEvent = Fill | FundingFee | OrderState  # what a candle makes the venue report

FEE_STEP = Decimal("0.00000001")


@dataclass
class PaperPosition:
    symbol: str
    side: str
    qty: Decimal
    entry_price: Decimal
    leverage: Decimal
    stop_loss: Decimal | None
    take_profit: Decimal | None
    signal_id: str
    opened_ms: int = 0  # when it filled: a settlement at or before this is not its to pay

    def as_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PaperPosition:
        dec: dict[str, Any] = {k: (Decimal(v) if v is not None and k in {"qty", "entry_price", "leverage", "stop_loss",
                                                          "take_profit"} else v) for k, v in d.items()}
        return cls(**dec)


class PaperBroker:
    def __init__(self, instruments: Instruments, capital: Decimal, *, slippage_bps: float = 2.0,
                 taker_fee_pct: float = 0.055, watch_interval: str = "5",
                 funding: FundingSchedule | None = None, maker_fee_pct: float = 0.02,
                 entry_timeout_s: int = 60) -> None:
        self.instruments = instruments
        self.balance_usd = capital
        self.slip = Decimal(repr(slippage_bps)) / Decimal(10_000)
        self.fee_rate = Decimal(repr(taker_fee_pct)) / Decimal(100)
        self.maker_rate = Decimal(repr(maker_fee_pct)) / Decimal(100)
        self.entry_timeout_ms = entry_timeout_s * 1000
        self.deadlines: dict[str, int] = {}  # limit entry link -> cancelled after a candle ending past this (ms)
        self.watch_interval = watch_interval
        self.pending: dict[str, OrderIntent] = {}  # symbol -> entry or close waiting for the next open
        self.held: dict[str, PaperPosition] = {}  # symbol -> the open position
        self.orders: dict[str, OrderState] = {}
        # symbol -> the last close seen, on the tick grid when read: most candles' closes are never read (a float
        # until then; its instrument is known from that candle on, so the price is the one rounding it at once gives)
        self.closes: dict[str, float | Decimal] = {}
        self.schedule = funding or FundingSchedule()  # not `funding`: that is the Broker method below
        self.funded_until: dict[str, int] = {}  # symbol -> settlements up to this time (ms) are applied
        self.seq = 0

    # --- the venue's side of the protocol (sync; async wrappers below) --------------------------------
    def submit(self, intent: OrderIntent) -> OrderState:
        known = self.orders.get(intent.order_link_id)
        if known is not None:  # the same link id twice is the same order (idempotent like Bybit's 110072)
            return known
        side = exit_side(intent.side) if intent.reduce_only else entry_side(intent.side)
        state = OrderState(intent.order_link_id, f"paper-{intent.order_link_id}", intent.symbol, side, intent.qty,
                           "New", reduce_only=intent.reduce_only)
        self.orders[intent.order_link_id] = state
        self.pending[intent.symbol] = intent
        return state

    def cancel_entry(self, intent: OrderIntent) -> bool:
        """An entry waits for the next open here: withdrawing it is certain."""
        pending = self.pending.get(intent.symbol)
        if pending is not None and pending.order_link_id == intent.order_link_id:
            del self.pending[intent.symbol]
            self.deadlines.pop(intent.order_link_id, None)
            self.orders[intent.order_link_id] = _with(self.orders[intent.order_link_id], status="Cancelled")
        return True

    def set_stop(self, symbol: str, stop_loss: Decimal, side: Side) -> None:
        position = self.held.get(symbol)
        if position is not None:
            position.stop_loss = stop_loss

    def on_candle(self, candle: Candle) -> list[VenueEvent]:
        """Settle funding due by the open, fill what is pending at the open, then the position's TP/SL
        inside the candle."""
        if candle.interval != self.watch_interval:
            return []
        events: list[VenueEvent] = self._settle(candle.symbol, candle.open_ms)
        self.instruments.get(candle.symbol, candle.open)  # known from its first candle's open (see `closes`)
        intent = self.pending.pop(candle.symbol, None)
        if intent is not None and intent.order_type == "Limit":
            events.extend(self._work_limit(intent, candle))
        elif intent is not None:
            events.extend(self._fill_market(intent, Decimal(repr(candle.open)), candle.open_time))
        position = self.held.get(candle.symbol)  # possibly opened at this very open
        if position is not None and (fill := self._protective(position, candle)) is not None:
            events.append(fill)
        self.closes[candle.symbol] = candle.close
        return events

    def _close(self, symbol: str, default: Decimal) -> Decimal:
        """The last close seen of `symbol` on its tick grid (`default` before any)."""
        last = self.closes.get(symbol)
        if last is None:
            return default
        if isinstance(last, float):
            last = self.closes[symbol] = self.instruments.get(symbol, last).price(last)
        return last

    def _work_limit(self, intent: OrderIntent, candle: Candle) -> list[VenueEvent]:
        """A resting post-only limit entry through one candle (the fill model above)."""
        assert intent.price is not None
        link, long = intent.order_link_id, intent.side == "long"
        inst = self.instruments.get(intent.symbol, candle.open)
        price = inst.price(intent.price, ROUND_FLOOR if long else ROUND_CEILING)
        o, h, lo = (Decimal(repr(x)) for x in (candle.open, candle.high, candle.low))
        order = self.orders[link]
        if link not in self.deadlines:  # placed at this open
            if o <= price if long else o >= price:
                cancelled = _with(order, status="Cancelled", updated_at=candle.open_time,
                                  reject_reason="EC_PostOnlyWillTakeLiquidity")
                self.orders[link] = cancelled
                return [cancelled]
            self.deadlines[link] = candle.open_ms + self.entry_timeout_ms
        if lo < price if long else h > price:
            del self.deadlines[link]
            at = candle.close_time
            fee = (intent.qty * price * self.maker_rate).quantize(FEE_STEP)
            self.balance_usd -= fee
            self.held[intent.symbol] = PaperPosition(intent.symbol, intent.side, intent.qty, price, intent.leverage,
                                                     intent.stop_loss, intent.take_profit, intent.signal_id,
                                                     int(at.timestamp() * 1000))
            self.orders[link] = _with(order, status="Filled", filled_qty=intent.qty, avg_price=price, fee=fee,
                                      updated_at=at)
            return [replace(self._fill(link, intent.symbol, order.side, intent.qty, price, fee, at, False, None),
                            order_type="Limit")]
        if dt_to_ms(candle.close_time) >= self.deadlines[link]:
            del self.deadlines[link]
            cancelled = _with(order, status="Cancelled", updated_at=candle.close_time)
            self.orders[link] = cancelled
            return [cancelled]
        self.pending[intent.symbol] = intent  # rests on
        return []

    def _settle(self, symbol: str, until_ms: int) -> list[VenueEvent]:
        """The symbol's settlements up to `until_ms`, paid or received by the position held across them."""
        after = self.funded_until.get(symbol, until_ms)  # the first candle seen: nothing before it was held
        self.funded_until[symbol] = until_ms
        position = self.held.get(symbol)
        if position is None:
            return []
        out: list[VenueEvent] = []
        for t, rate in self.schedule.between(symbol, after, until_ms):
            if t <= position.opened_ms:
                continue
            mark = self._close(symbol, position.entry_price)
            fee = funding_fee(position.qty, mark, rate, position.side).quantize(FEE_STEP)
            self.balance_usd -= fee
            out.append(FundingFee(f"paper-funding-{symbol}-{t}", symbol, fee, ms_to_dt(t), rate))
        return out

    def _adverse(self, price: Decimal, buying: bool, symbol: str) -> Decimal:
        inst = self.instruments.get(symbol, float(price))
        moved = price * (1 + self.slip) if buying else price * (1 - self.slip)
        return inst.price(moved, ROUND_CEILING if buying else ROUND_FLOOR)

    def _fee(self, qty: Decimal, price: Decimal) -> Decimal:
        return (qty * price * self.fee_rate).quantize(FEE_STEP)

    def _fill_market(self, intent: OrderIntent, open_price: Decimal, at: datetime) -> list[VenueEvent]:
        order = self.orders[intent.order_link_id]
        if intent.reduce_only:
            position = self.held.get(intent.symbol)
            if position is None:
                self.orders[intent.order_link_id] = _with(order, status="Cancelled", updated_at=at)
                return []
            return [self._exit(position, open_price, at, intent.order_link_id, None, order)]
        buying = intent.side == "long"
        bound = intent.price_bound
        if bound is not None and (open_price > bound if buying else open_price < bound):
            refused = _with(order, status="Rejected", updated_at=at, reject_reason=(
                f"{intent.symbol}: the price {open_price} is past the fallback's bound {bound}: no market entry"))
            self.orders[intent.order_link_id] = refused
            return [refused]
        price = self._adverse(open_price, buying, intent.symbol)
        if _beyond(price, intent):  # born at or past its own exit: not a trade
            refused = _with(order, status="Rejected", updated_at=at, reject_reason=(
                f"fill beyond level: {intent.symbol} would fill at {price} (stop {intent.stop_loss}, "
                f"target {intent.take_profit})"))
            self.orders[intent.order_link_id] = refused
            return [refused]
        fee = self._fee(intent.qty, price)
        self.balance_usd -= fee
        self.held[intent.symbol] = PaperPosition(intent.symbol, intent.side, intent.qty, price, intent.leverage,
                                                 intent.stop_loss, intent.take_profit, intent.signal_id,
                                                 int(at.timestamp() * 1000))
        self.orders[intent.order_link_id] = _with(order, status="Filled", filled_qty=intent.qty, avg_price=price,
                                                  fee=fee, updated_at=at)
        return [self._fill(intent.order_link_id, intent.symbol, order.side, intent.qty, price, fee, at, False, None)]

    def _protective(self, p: PaperPosition, c: Candle) -> Fill | None:
        long = p.side == "long"
        o, h, lo = (Decimal(repr(x)) for x in (c.open, c.high, c.low))
        sl, tp = p.stop_loss, p.take_profit
        hit_sl = sl is not None and (lo <= sl if long else h >= sl)
        hit_tp = tp is not None and (h >= tp if long else lo <= tp)
        if not (hit_sl or hit_tp):
            return None
        kind = "StopLoss" if hit_sl else "TakeProfit"  # both touched: the stop (conservative)
        level = sl if hit_sl else tp
        assert level is not None
        beyond = (o <= level if long else o >= level) if kind == "StopLoss" else (o >= level if long else o <= level)
        purpose: Purpose = "sl" if kind == "StopLoss" else "tp"
        at = c.open_time if beyond else c.close_time
        return self._exit(p, o if beyond else level, at, order_link_id(p.signal_id, purpose), kind, None)

    def _exit(self, p: PaperPosition, level: Decimal, at: datetime, link: str, kind: str | None,
              order: OrderState | None) -> Fill:
        buying = p.side == "short"
        price = self._adverse(level, buying, p.symbol)
        fee = self._fee(p.qty, price)
        direction = 1 if p.side == "long" else -1
        self.balance_usd += (price - p.entry_price) * p.qty * direction - fee
        del self.held[p.symbol]
        side = exit_side(p.side)  # type: ignore[arg-type]
        state = OrderState(link, f"paper-{link}", p.symbol, side, p.qty, "Filled", filled_qty=p.qty, avg_price=price,
                           fee=fee, reduce_only=True, updated_at=at)
        self.orders[link] = state if order is None else _with(order, status="Filled", filled_qty=p.qty,
                                                              avg_price=price, fee=fee, updated_at=at)
        return self._fill(link, p.symbol, side, p.qty, price, fee, at, True, kind)

    def _fill(self, link: str, symbol: str, side: Any, qty: Decimal, price: Decimal, fee: Decimal, at: datetime,
              reduce_only: bool, kind: str | None) -> Fill:
        self.seq += 1
        return Fill(f"paper-{self.seq}", link, f"paper-{link}", symbol, side, qty, price, fee, at, self.seq,
                    reduce_only, kind)

    def equity(self) -> Decimal:
        unrealized = Decimal(0)
        for p in self.held.values():
            last = self._close(p.symbol, p.entry_price)
            unrealized += (last - p.entry_price) * p.qty * (1 if p.side == "long" else -1)
        return self.balance_usd + unrealized

    # --- state, so a resumed replay continues with the same venue ------------------------------------
    def as_json(self) -> dict[str, Any]:
        return {"balance": str(self.balance_usd), "seq": self.seq,
                "positions": [p.as_json() for p in self.held.values()],
                "pending": [_intent_json(i) for i in self.pending.values()],
                "last_price": {k: str(self._close(k, Decimal(0))) for k in self.closes},
                "funded_until": dict(self.funded_until), "deadlines": dict(self.deadlines)}

    def restore(self, doc: dict[str, Any]) -> None:
        self.balance_usd = Decimal(doc["balance"])
        self.seq = int(doc["seq"])
        self.held = {p["symbol"]: PaperPosition.from_json(p) for p in doc["positions"]}
        self.closes = {k: Decimal(v) for k, v in doc.get("last_price", {}).items()}
        self.funded_until = {k: int(v) for k, v in doc.get("funded_until", {}).items()}
        self.deadlines = {k: int(v) for k, v in doc.get("deadlines", {}).items()}
        self.pending = {}
        for d in doc["pending"]:
            intent = _intent_of(d)
            self.pending[intent.symbol] = intent
            side = exit_side(intent.side) if intent.reduce_only else entry_side(intent.side)
            self.orders[intent.order_link_id] = OrderState(intent.order_link_id, f"paper-{intent.order_link_id}",
                                                           intent.symbol, side, intent.qty, "New",
                                                           reduce_only=intent.reduce_only)

    # --- the async Broker protocol ----------------------------------------------------------------------
    async def open(self, intent: OrderIntent) -> OrderState:
        return self.submit(intent)

    async def close(self, intent: OrderIntent) -> OrderState:
        return self.submit(intent)

    async def order(self, order_link_id: str) -> OrderState | None:
        return self.orders.get(order_link_id)

    async def cancel(self, intent: OrderIntent) -> OrderState | None:
        self.cancel_entry(intent)
        return self.orders.get(intent.order_link_id)

    async def positions(self) -> list[Position]:
        return [Position(p.symbol, p.side, p.qty, p.entry_price, p.leverage, p.stop_loss, p.take_profit)  # type: ignore[arg-type]
                for p in self.held.values()]

    async def open_orders(self) -> list[OrderState]:
        return [o for o in self.orders.values() if o.status == "New"]

    async def balance(self) -> Balance:
        equity = self.equity()
        margin = sum((p.qty * p.entry_price / p.leverage for p in self.held.values()), Decimal(0))
        return Balance(equity, equity - margin, margin, equity - self.balance_usd)

    async def executions(self, since: datetime) -> list[Fill]:
        return []  # fills are delivered as they happen (on_candle); the paper venue keeps no history

    async def funding(self, since: datetime) -> list[FundingFee]:
        return []

    async def last_price(self, symbol: str) -> Decimal:
        if symbol not in self.closes:
            raise KeyError(symbol)
        return self._close(symbol, Decimal(0))


def _beyond(price: Decimal, intent: OrderIntent) -> bool:
    """An entry price at or past the intent's own target or stop."""
    tp, sl = intent.take_profit, intent.stop_loss
    if intent.side == "long":
        return (tp is not None and price >= tp) or (sl is not None and price <= sl)
    return (tp is not None and price <= tp) or (sl is not None and price >= sl)


def _with(o: OrderState, **changes: Any) -> OrderState:
    return replace(o, **changes)


def _intent_json(i: OrderIntent) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in
            ((f, getattr(i, f)) for f in OrderIntent.__dataclass_fields__)}


def _intent_of(d: dict[str, Any]) -> OrderIntent:
    money = {"qty", "leverage", "stop_loss", "take_profit", "price", "price_bound"}
    fields: dict[str, Any] = {k: (Decimal(v) if k in money and v is not None else v) for k, v in d.items()}
    return OrderIntent(**fields)
