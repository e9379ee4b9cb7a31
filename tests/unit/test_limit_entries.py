"""Limit entries in the paper venue through the Trader (the fill model in core/exchange/paper.py), and the bot
fields that configure them: a limit fills only if a candle trades through it within the timeout, as a maker; an
unfilled one is cancelled and the configured fallback follows — at most one market entry, under its own id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from core.config import BotConfig
from core.exchange.broker import order_link_id, position_idx
from core.exchange.paper import PaperBroker
from core.instruments import Instrument, Instruments
from core.lifecycle import TradeStatus
from core.market.candle import Candle
from core.ml.scorer import UNSCORED
from core.signal import Signal
from core.trader import Trader

T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def _candle(i: int, o: float, h: float, lo: float, c: float) -> Candle:
    return Candle("BTCUSDT", "5", T0 + i * FIVE, o, h, lo, c, 1.0)


def _paper(**fields: Any) -> tuple[Trader, PaperBroker]:
    instruments = Instruments({"BTCUSDT": Instrument("BTCUSDT", Decimal("0.1"), Decimal("0.001"), Decimal("0.001"))})
    config = BotConfig(id="b", symbols=["BTCUSDT"], min_level_ticks=1, min_reward_r=0, entry_order="limit",
                       entry_timeout_s=600, **fields)  # two 5-minute candles
    venue = PaperBroker(instruments, Decimal(10_000), slippage_bps=0, taker_fee_pct=0.05, watch_interval="5",
                        maker_fee_pct=config.maker_fee_pct, entry_timeout_s=config.entry_timeout_s)
    return Trader(config, instruments, venue, mode="paper"), venue


def _take(trader: Trader, entry: str = "60000") -> Signal:
    signal = Signal("a" * 24, "b", "BTCUSDT", "15", "trend_pullback", "long", Decimal(entry), Decimal(entry) - 1000,
                    Decimal(entry) + 2000, T0 - FIVE)
    assert trader.guard(signal, UNSCORED) is None
    trader.on_decisions([SimpleNamespace(signal=signal, action="EXECUTED")])
    return signal


def test_a_limit_fills_only_when_a_candle_trades_through_it_as_a_maker() -> None:
    trader, venue = _paper()
    signal = _take(trader)
    trader.on_candle(_candle(0, 60100, 60200, 60000, 60150))  # placed at 60100's open; its low only touches 60000
    [trade] = trader.trades.values()
    assert trade.status == TradeStatus.PENDING
    trader.on_candle(_candle(1, 60150, 60200, 59990, 60050))  # through it
    assert trade.status == TradeStatus.OPEN and trade.record.entry_price == Decimal(60000)
    qty = trade.record.qty
    assert trade.record.fees == qty * Decimal(60000) * Decimal("0.0002")  # the maker fee, no slippage
    assert [o.order_link_id for o in venue.orders.values()] == [order_link_id(signal.id, "open")]
    [order] = trader.events[-1].orders  # the ledger's order row
    assert (order.order_type, order.fee) == ("Limit", trade.record.fees)


def test_an_unfilled_limit_is_cancelled_at_its_timeout_then_skipped() -> None:
    trader, venue = _paper(entry_fallback="skip")
    signal = _take(trader)
    trader.on_candle(_candle(0, 60100, 60200, 60050, 60150))
    trader.on_candle(_candle(1, 60150, 60250, 60080, 60200))  # the timeout (10 min from the first open) is over
    assert not trader.trades and venue.orders[order_link_id(signal.id, "open")].status == "Cancelled"
    [ended] = trader.drain_ended()
    assert ended.status == TradeStatus.CANCELLED and "fallback skip" in ended.reason
    trader.on_candle(_candle(2, 60000, 60000, 59000, 59500))  # would have filled: too late
    assert not venue.held and len(venue.orders) == 1


def test_an_unfilled_limit_falls_back_to_one_bounded_market_entry() -> None:
    trader, venue = _paper(entry_fallback="market", fallback_max_move_bps=50)
    signal = _take(trader)
    trader.on_candle(_candle(0, 60100, 60200, 60050, 60150))
    trader.on_candle(_candle(1, 60150, 60250, 60080, 60200))  # cancelled: the fallback waits for the next open
    [trade] = trader.trades.values()
    assert trade.status == TradeStatus.PENDING and trade.fallback
    trader.on_candle(_candle(2, 60250, 60300, 60200, 60280))  # 60250 is within 50 bps of 60000: market entry
    assert trade.status == TradeStatus.OPEN and trade.record.entry_price == Decimal(60250)
    assert trade.record.fees == trade.record.qty * Decimal(60250) * Decimal("0.0005")  # taker
    links = [o.order_link_id for o in venue.orders.values()]
    assert links == [order_link_id(signal.id, "open"), order_link_id(signal.id, "fallback")]


def test_the_fallback_is_refused_past_its_bound() -> None:
    trader, venue = _paper(entry_fallback="market", fallback_max_move_bps=20)
    signal = _take(trader)
    trader.on_candle(_candle(0, 60100, 60200, 60050, 60150))
    trader.on_candle(_candle(1, 60150, 60250, 60080, 60200))
    trader.on_candle(_candle(2, 60300, 60400, 60250, 60350))  # 50 bps above the limit: past 20 bps
    assert not trader.trades and not venue.held
    [ended] = trader.drain_ended()
    assert ended.status == TradeStatus.REJECTED and "past the fallback's bound" in ended.reason
    assert venue.orders[order_link_id(signal.id, "fallback")].status == "Rejected"


def test_a_post_only_that_would_take_liquidity_is_cancelled_and_falls_back() -> None:
    trader, venue = _paper(entry_fallback="market")
    signal = _take(trader)
    trader.on_candle(_candle(0, 59990, 60100, 59900, 60050))  # the open is already through the limit
    assert venue.orders[order_link_id(signal.id, "open")].reject_reason == "EC_PostOnlyWillTakeLiquidity"
    [trade] = trader.trades.values()
    assert trade.fallback and trade.status == TradeStatus.PENDING
    trader.on_candle(_candle(1, 60050, 60100, 60000, 60080))
    assert trade.status == TradeStatus.OPEN and trade.record.entry_price == Decimal(60050)


def test_a_resting_limit_survives_a_checkpoint() -> None:
    trader, _ = _paper(entry_fallback="market")
    _take(trader)
    trader.on_candle(_candle(0, 60100, 60200, 60050, 60150))
    doc = trader.as_json()
    again, venue2 = _paper(entry_fallback="market")
    again.restore(doc)
    again.on_candle(_candle(1, 60150, 60200, 59990, 60050))  # within the timeout, through the limit
    [trade] = again.trades.values()
    assert trade.status == TradeStatus.OPEN and trade.record.entry_price == Decimal(60000)
    assert len(venue2.orders) == 1


def test_position_index_per_mode() -> None:
    assert [position_idx("one_way", "long"), position_idx("one_way", "short")] == [0, 0]
    assert [position_idx("hedge", "long"), position_idx("hedge", "short")] == [1, 2]


@pytest.mark.parametrize(("field", "value", "words"), [
    ("margin_mode", "portfolio", "'isolated' or 'cross'"),
    ("entry_order", "stop", "'market' or 'limit'"),
    ("entry_timeout_s", 2, "greater than or equal to 5"),
    ("entry_timeout_s", 7200, "less than or equal to 3600"),
    ("entry_fallback", "retry", "'market' or 'skip'"),
    ("fallback_max_move_bps", -1, "greater than or equal to 0"),
    ("maker_fee_pct", 2, "less than or equal to 1"),
])
def test_the_new_fields_are_bounded_and_named_in_errors(field: str, value: Any, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        BotConfig.model_validate({"id": "b", "symbols": ["BTCUSDT"], field: value})
    [error] = caught.value.errors()
    assert error["loc"] == (field,) and words in error["msg"]


def test_defaults_keep_market_entries_and_the_account_as_found() -> None:
    config = BotConfig(id="b", symbols=["BTCUSDT"])
    assert (config.entry_order, config.margin_mode, config.entry_fallback) == ("market", None, "skip")
