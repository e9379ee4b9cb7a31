"""PaperBroker: a simulated venue driven by closed candles, for replays and paper trading on live data.

- A market entry fills at the open of the next candle of its symbol (on the watched interval), moved
  against the trade by the slippage (bps) and rounded to the tick against it too; taker fee on every fill.
- A position's stop-loss and take-profit are market orders on the venue: a candle touching a level
  fills it (with slippage); one opening beyond a level fills at that open; one touching both fills the
  stop (the phantom book's conservative rule; the watched interval is the bot's fastest).
- Funding is ignored. Liquidation is not simulated: the desk never trades without a stop and caps
  leverage, so the stop is always far nearer than the liquidation price.
- Equity = wallet balance (capital + realized PnL − fees) + unrealized PnL at the last close seen.
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
    entry_side,
    exit_side,
    order_link_id,
)
from core.instruments import Instruments
from core.market.candle import Candle

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

    def as_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PaperPosition:
        dec = {k: (Decimal(v) if v is not None and k in {"qty", "entry_price", "leverage", "stop_loss",
                                                          "take_profit"} else v) for k, v in d.items()}
        return cls(**dec)


class PaperBroker:
    def __init__(self, instruments: Instruments, capital: Decimal, *, slippage_bps: float = 2.0,
                 taker_fee_pct: float = 0.055, watch_interval: str = "5") -> None:
        self.instruments = instruments
        self.balance_usd = capital
        self.slip = Decimal(repr(slippage_bps)) / Decimal(10_000)
        self.fee_rate = Decimal(repr(taker_fee_pct)) / Decimal(100)
        self.watch_interval = watch_interval
        self.pending: dict[str, OrderIntent] = {}  # symbol -> entry or close waiting for the next open
        self.held: dict[str, PaperPosition] = {}  # symbol -> the open position
        self.orders: dict[str, OrderState] = {}
        self.closes: dict[str, Decimal] = {}  # symbol -> last close seen
        self.seq = 0

    # --- the venue's side of the protocol (sync; async wrappers below) --------------------------------
    def submit(self, intent: OrderIntent) -> OrderState:
        known = self.orders.get(intent.order_link_id)
        if known is not None:  # the same link id twice is the same order (idempotent like Bybit's 110072)
            return known
        side = exit_side(intent.side) if intent.reduce_only else entry_side(intent.side)  # type: ignore[arg-type]
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
            self.orders[intent.order_link_id] = _with(self.orders[intent.order_link_id], status="Cancelled")
        return True

    def set_stop(self, symbol: str, stop_loss: Decimal) -> None:
        position = self.held.get(symbol)
        if position is not None:
            position.stop_loss = stop_loss

    def on_candle(self, candle: Candle) -> list[Fill]:
        """Fill what is pending at the open, then the position's TP/SL inside the candle."""
        if candle.interval != self.watch_interval:
            return []
        fills: list[Fill] = []
        inst = self.instruments.get(candle.symbol, candle.open)
        intent = self.pending.pop(candle.symbol, None)
        if intent is not None:
            fills.extend(self._fill_market(intent, Decimal(repr(candle.open)), candle.open_time))
        position = self.held.get(candle.symbol)  # possibly opened at this very open
        if position is not None and (fill := self._protective(position, candle)) is not None:
            fills.append(fill)
        self.closes[candle.symbol] = inst.price(candle.close)
        return fills

    def _adverse(self, price: Decimal, buying: bool, symbol: str) -> Decimal:
        inst = self.instruments.get(symbol, float(price))
        moved = price * (1 + self.slip) if buying else price * (1 - self.slip)
        return inst.price(moved, ROUND_CEILING if buying else ROUND_FLOOR)

    def _fee(self, qty: Decimal, price: Decimal) -> Decimal:
        return (qty * price * self.fee_rate).quantize(FEE_STEP)

    def _fill_market(self, intent: OrderIntent, open_price: Decimal, at: datetime) -> list[Fill]:
        order = self.orders[intent.order_link_id]
        if intent.reduce_only:
            position = self.held.get(intent.symbol)
            if position is None:
                self.orders[intent.order_link_id] = _with(order, status="Cancelled", updated_at=at)
                return []
            return [self._exit(position, open_price, at, intent.order_link_id, None, order)]
        buying = intent.side == "long"
        price = self._adverse(open_price, buying, intent.symbol)
        fee = self._fee(intent.qty, price)
        self.balance_usd -= fee
        self.held[intent.symbol] = PaperPosition(intent.symbol, intent.side, intent.qty, price, intent.leverage,
                                                      intent.stop_loss, intent.take_profit, intent.signal_id)
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
        purpose = "sl" if kind == "StopLoss" else "tp"
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
            last = self.closes.get(p.symbol, p.entry_price)
            unrealized += (last - p.entry_price) * p.qty * (1 if p.side == "long" else -1)
        return self.balance_usd + unrealized

    # --- state, so a resumed replay continues with the same venue ------------------------------------
    def as_json(self) -> dict[str, Any]:
        return {"balance": str(self.balance_usd), "seq": self.seq,
                "positions": [p.as_json() for p in self.held.values()],
                "pending": [_intent_json(i) for i in self.pending.values()],
                "last_price": {k: str(v) for k, v in self.closes.items()}}

    def restore(self, doc: dict[str, Any]) -> None:
        self.balance_usd = Decimal(doc["balance"])
        self.seq = int(doc["seq"])
        self.held = {p["symbol"]: PaperPosition.from_json(p) for p in doc["positions"]}
        self.closes = {k: Decimal(v) for k, v in doc.get("last_price", {}).items()}
        self.pending = {}
        for d in doc["pending"]:
            intent = _intent_of(d)
            self.pending[intent.symbol] = intent
            side = exit_side(intent.side) if intent.reduce_only else entry_side(intent.side)  # type: ignore[arg-type]
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
        return self.closes[symbol]


def _with(o: OrderState, **changes: Any) -> OrderState:
    return replace(o, **changes)


def _intent_json(i: OrderIntent) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in
            ((f, getattr(i, f)) for f in OrderIntent.__dataclass_fields__)}


def _intent_of(d: dict[str, Any]) -> OrderIntent:
    money = {"qty", "leverage", "stop_loss", "take_profit"}
    return OrderIntent(**{k: (Decimal(v) if k in money and v is not None else v) for k, v in d.items()})
