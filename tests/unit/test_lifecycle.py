"""The trade lifecycle (core/lifecycle.py) as the Trader drives it, with no exchange: which reports move a
trade where, what frees a slot, what is booked once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from core.config import BotConfig
from core.decisions import OPTIONS, RecoveryKind
from core.exchange.broker import Fill, FundingFee, OrderIntent, OrderState, order_link_id
from core.instruments import Instruments
from core.lifecycle import IllegalTransition, TradeStatus, advance
from core.market.candle import Candle
from core.ml.scorer import UNSCORED
from core.recovery import EXCHANGE_EFFECTS, Option
from core.signal import Signal
from core.trader import Trader

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


class Venue:
    """Records what the Trader sends; the tests play the exchange."""

    watch_interval = "5"

    def __init__(self) -> None:
        self.sent: list[OrderIntent] = []

    def submit(self, intent: OrderIntent) -> None:
        self.sent.append(intent)

    def cancel_entry(self, intent: OrderIntent) -> bool:
        return False

    def set_stop(self, symbol: str, stop_loss: Decimal, side: str = "long") -> None:
        pass

    def on_candle(self, candle: Candle) -> list[Fill]:
        return []

    def equity(self) -> Decimal:
        return Decimal(10_000)

    def as_json(self) -> dict[str, Any]:
        return {}

    def restore(self, doc: dict[str, Any]) -> None:
        pass


def _trader(max_positions: int = 1) -> tuple[Trader, Venue]:
    venue = Venue()
    return Trader(BotConfig(id="b", symbols=["BTCUSDT", "ETHUSDT"], max_positions=max_positions), Instruments(),
                  venue, mode="live"), venue


def _take(trader: Trader, n: int = 1, symbol: str = "BTCUSDT") -> Signal:
    signal = Signal(f"{n:024x}", "b", symbol, "15", "trend_pullback", "long", Decimal(100), Decimal(99),
                    Decimal(102), T0)
    assert trader.guard(signal, UNSCORED) is None
    trader.on_decisions([SimpleNamespace(signal=signal, action="EXECUTED")])
    return signal


def _fill(signal: Signal, qty: str, n: int, side: str = "Buy", link: str | None = None, price: str = "100",
          at: datetime = T0) -> Fill:
    return Fill(f"e{n}", link if link is not None else order_link_id(signal.id), "o1", signal.symbol, side,  # type: ignore[arg-type]
                Decimal(qty), Decimal(price), Decimal("0.01"), at)


def _order(signal: Signal, status: str, filled: str, purpose: str = "open") -> OrderState:
    return OrderState(order_link_id(signal.id, purpose), "o1", signal.symbol, "Buy", Decimal(1), status,  # type: ignore[arg-type]
                      filled_qty=Decimal(filled))


def test_illegal_transitions_raise() -> None:
    assert advance("t", TradeStatus.PENDING, TradeStatus.OPEN) == TradeStatus.OPEN
    for current, target in [(TradeStatus.CLOSED, TradeStatus.OPEN), (TradeStatus.REJECTED, TradeStatus.OPEN),
                            (TradeStatus.PENDING, TradeStatus.CLOSED), (TradeStatus.OPEN, TradeStatus.PENDING)]:
        with pytest.raises(IllegalTransition):
            advance("t", current, target)


@pytest.mark.parametrize("order_first", [True, False])
def test_a_partly_filled_entry_opens_at_what_filled(order_first: bool) -> None:
    trader, _ = _trader()
    signal = _take(trader)
    qty = trader.trades[f"t-{signal.id}"].record.qty
    half = str(qty / 2)
    reports = [lambda: trader.on_order(_order(signal, "Cancelled", half)),
               lambda: trader.on_fill(_fill(signal, half, 1))]
    for report in reports if order_first else reversed(reports):
        report()
    trade = trader.trades[f"t-{signal.id}"]
    assert trade.status == TradeStatus.OPEN and trade.record.qty == Decimal(half)
    assert [e.kind for e in trader.events] == ["open"] and trader.events[0].trade.qty == Decimal(half)


def test_a_refused_or_unfilled_entry_frees_its_slot() -> None:
    trader, _ = _trader(max_positions=1)
    refused = _take(trader, 1)
    ended = trader.on_refused(order_link_id(refused.id), "110007: ab not enough for new order")
    assert ended is not None and ended.status == TradeStatus.REJECTED and "110007" in ended.reason
    assert not trader.trades and not trader.events
    cancelled = _take(trader, 2)  # the slot is free again
    ended = trader.on_order(_order(cancelled, "Cancelled", "0"))
    assert ended is not None and ended.status == TradeStatus.CANCELLED and not trader.trades
    _take(trader, 3, "ETHUSDT")  # and again


def test_a_refused_close_leaves_the_trade_open_and_funding_counts_once() -> None:
    trader, venue = _trader()
    signal = _take(trader)
    qty = str(trader.trades[f"t-{signal.id}"].record.qty)
    trader.on_fill(_fill(signal, qty, 1))
    assert [c.step for c in trader.close_at_market("BTCUSDT")] == ["close sent"]
    trade = trader.trades[f"t-{signal.id}"]
    assert trade.status == TradeStatus.CLOSING and venue.sent[-1].reduce_only
    trader.on_refused(order_link_id(signal.id, "close"), "110017: position is zero")
    assert trade.status == TradeStatus.OPEN and trade.close_link is None

    before = FundingFee("f0", "BTCUSDT", Decimal("0.5"), T0 - timedelta(hours=1))  # before the entry: not its
    fee = FundingFee("f1", "BTCUSDT", Decimal("0.25"), T0 + timedelta(hours=8))
    for f in (before, fee, fee):
        trader.on_funding(f)
    assert trade.record.funding == Decimal("-0.25")
    trader.on_fill(_fill(signal, qty, 2, side="Sell", link="", price="102", at=T0 + timedelta(hours=9)))
    close = trader.events[-1].trade
    assert close.exit_reason == "manual" and close.funding == Decimal("-0.25")
    assert close.net_pnl == close.gross_pnl - close.fees + close.funding  # type: ignore[operator]


def test_every_offered_option_has_an_effect() -> None:
    plain = {Option.IGNORE, Option.KEEP_HALTED, Option.DISMISS, Option.RESUME, Option.PROMOTE}
    for kind, options in OPTIONS.items():
        for option in options:
            assert option in plain or (kind, option) in EXCHANGE_EFFECTS, (kind, option)
    assert set(OPTIONS) == set(RecoveryKind)
