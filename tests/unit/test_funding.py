"""Funding (core/funding.py) and fills a trader would believe, in the paper venue, the Trader, the phantom
book and the engine: hand-computed settlements, positions that are not the settlement's, entries born dead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.config import BotConfig
from core.engine import Engine
from core.exchange.broker import OrderState, order_link_id
from core.exchange.paper import PaperBroker
from core.funding import FundingSchedule, funding_fee
from core.instruments import Instrument, Instruments
from core.lifecycle import TradeStatus
from core.market.candle import Candle, dt_to_ms
from core.ml.scorer import UNSCORED
from core.phantom import PhantomBook
from core.signal import Signal
from core.trader import Trader
from storage.candle_files import BadCandleFile
from storage.funding_files import read_funding_dir, read_funding_file, write_funding_file
from tests.fakes.bybit import FakeBybit

T0 = datetime(2026, 3, 2, 7, 55, tzinfo=UTC)  # five minutes before the 08:00 settlement
SETTLE = datetime(2026, 3, 2, 8, tzinfo=UTC)


def _candle(at: datetime, o: float, h: float, lo: float, c: float, symbol: str = "BTCUSDT",
            interval: str = "5") -> Candle:
    return Candle(symbol, interval, at, o, h, lo, c, 1.0)


def test_the_formula_by_hand_and_as_the_exchange_computes_it() -> None:
    assert funding_fee(Decimal("0.5"), Decimal(60000), Decimal("0.0001"), "long") == Decimal("3.00000")
    assert funding_fee(Decimal("0.5"), Decimal(60000), Decimal("0.0001"), "short") == Decimal("-3.00000")
    assert funding_fee(Decimal(2), Decimal(3000), Decimal("-0.0002"), "long") == Decimal("-1.2000")
    # the fake exchange (Bybit's rule) charges what the desk's paper venue charges, for the same position
    with FakeBybit(lambda: SETTLE) as fake:
        fake.set_price("ETHUSDT", "3000")
        fake.set_wallet_balance("100000")
        fake.place_directly({"symbol": "ETHUSDT", "side": "Sell", "orderType": "Market", "qty": "2"})
        row = fake.settle_funding("ETHUSDT", "0.0003", push=False)
    assert Decimal(row["execFee"]) == funding_fee(Decimal(2), Decimal(3000), Decimal("0.0003"), "short")


def _paper(schedule: FundingSchedule) -> tuple[Trader, PaperBroker]:
    instruments = Instruments({"BTCUSDT": Instrument("BTCUSDT", Decimal("0.1"), Decimal("0.001"), Decimal("0.001"))})
    venue = PaperBroker(instruments, Decimal(10_000), slippage_bps=0, taker_fee_pct=0.05, watch_interval="5",
                        funding=schedule)
    config = BotConfig(id="b", symbols=["BTCUSDT"], min_level_ticks=1, min_reward_r=0)
    return Trader(config, instruments, venue, mode="paper"), venue


def _take(trader: Trader, entry: str = "60000", stop: str = "59000", target: str = "62000") -> Signal:
    signal = Signal("f" * 24, "b", "BTCUSDT", "15", "trend_pullback", "long", Decimal(entry), Decimal(stop),
                    Decimal(target), T0 - timedelta(minutes=5))
    assert trader.guard(signal, UNSCORED) is None
    trader.on_decisions([SimpleNamespace(signal=signal, action="EXECUTED")])
    return signal


def test_a_paper_position_held_across_a_settlement_pays_it_once() -> None:
    schedule = FundingSchedule()
    schedule.add("BTCUSDT", dt_to_ms(SETTLE), Decimal("0.0001"))
    schedule.add("BTCUSDT", dt_to_ms(SETTLE + timedelta(hours=8)), Decimal("-0.0002"))
    trader, venue = _paper(schedule)
    _take(trader)
    trader.on_candle(_candle(T0, 60000, 60100, 59900, 60050))  # the entry fills at 60000 (no slippage)
    [trade] = trader.trades.values()
    qty = trade.record.qty
    assert trade.status == TradeStatus.OPEN and not trader.events[-1].trade.funding
    before = venue.balance_usd
    trader.on_candle(_candle(SETTLE, 60050, 60200, 60000, 60100))  # the 08:00 settlement at the last close
    paid = funding_fee(qty, Decimal(60050), Decimal("0.0001"), "long").quantize(Decimal("0.00000001"))
    assert trade.record.funding == -paid and venue.balance_usd == before - paid
    assert trader.events[-1].kind == "funding"
    trader.on_candle(_candle(SETTLE + timedelta(minutes=5), 60100, 60100, 60000, 60000))  # no settlement: nothing
    assert trade.record.funding == -paid
    # the checkpoint round trip does not settle 08:00 again
    doc = trader.as_json()
    again, _ = _paper(schedule)
    again.restore(doc)
    again.on_candle(_candle(SETTLE + timedelta(minutes=10), 60000, 62100, 60000, 62000))  # the target fills
    close = again.events[-1].trade
    assert close.status == "closed" and close.funding == -paid
    assert close.net_pnl == close.gross_pnl - close.fees + close.funding  # type: ignore[operator]


def test_an_entry_filled_at_the_settlement_does_not_pay_it() -> None:
    schedule = FundingSchedule()
    schedule.add("BTCUSDT", dt_to_ms(SETTLE), Decimal("0.001"))
    trader, _ = _paper(schedule)
    trader.on_candle(_candle(T0, 60000, 60100, 59900, 60000))  # seen before: the symbol's funding clock starts
    _take(trader)
    trader.on_candle(_candle(SETTLE, 60000, 60100, 59900, 60050))  # fills at the 08:00 open itself
    [trade] = trader.trades.values()
    assert trade.status == TradeStatus.OPEN and trade.record.funding == 0


def test_a_phantom_earns_its_funding_in_r() -> None:
    schedule = FundingSchedule()
    schedule.add("BTCUSDT", dt_to_ms(SETTLE), Decimal("0.0001"))
    book = PhantomBook(funding=schedule)
    signal = Signal("p" * 24, "b", "BTCUSDT", "5", "scalp", "long", Decimal(100), Decimal(99), Decimal(102), T0)
    phantom = book.record(signal, "EXECUTED")
    book.on_candle(_candle(T0, 100, 100.5, 99.5, 100))
    book.on_candle(_candle(SETTLE, 100, 100.5, 99.6, 100.2))  # 08:00 at an open of 100: −0.0001 × 100 / 1 R
    assert phantom.funding_r == pytest.approx(-0.01)
    closed, _ = book.on_candle(_candle(SETTLE + timedelta(minutes=5), 100.2, 102.5, 100.1, 102))
    assert closed == [phantom] and phantom.realized_r == pytest.approx(2 - 0.01)


def test_a_paper_entry_filled_beyond_its_level_is_not_opened() -> None:
    trader, venue = _paper(FundingSchedule())
    signal = _take(trader, entry="60000", stop="59990", target="60010")
    trader.on_candle(_candle(T0, 60020, 60030, 60000, 60010))  # the open is already past the target
    assert not trader.trades and not trader.events
    [ended] = trader.drain_ended()
    assert ended.status == TradeStatus.REJECTED and ended.reason.startswith("fill beyond level")
    state = venue.orders[order_link_id(signal.id)]
    assert isinstance(state, OrderState) and state.status == "Rejected"


def test_levels_too_near_or_too_little_reward_are_not_a_trade() -> None:
    """The SOL case: levels one tick from the entry at $1.67 are followed as a phantom, never sent."""
    config = BotConfig(id="b", symbols=["SOLUSDT"])
    engine = Engine(config, instruments=Instruments({"SOLUSDT": Instrument("SOLUSDT", Decimal("0.01"), Decimal("0.1"),
                                                                           Decimal("0.1"))}))
    inst = engine.instruments.get("SOLUSDT", 1.67)
    assert "1 tick(s) from the entry" in (engine._unfit(inst, Decimal("1.67"), Decimal("1.66"), Decimal("1.68")) or "")
    # 5 ticks of reward against a round trip of 0.11 % fees and 0.04 % slippage: less than nothing
    assert "after fees and slippage" in (engine._unfit(inst, Decimal("100.00"), Decimal("99.00"),
                                                       Decimal("100.05")) or "")
    assert engine._unfit(inst, Decimal("1.67"), Decimal("1.64"), Decimal("1.76")) is None


def test_funding_files(tmp_path: Path) -> None:
    path = write_funding_file("BTCUSDT", [(dt_to_ms(SETTLE), Decimal("0.0001"))], tmp_path)
    assert path.name == "BTC-USDT_funding_bybit.csv" and read_funding_file(path)[1] == [(dt_to_ms(SETTLE),
                                                                                         Decimal("0.0001"))]
    assert read_funding_dir(tmp_path).covers("BTCUSDT") and not read_funding_dir(tmp_path).covers("ETHUSDT")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ETH-USDT_funding_bybit.csv").write_text("timestamp_ms,rate\n1772438400000,0.0001\n1772409600000,0.0001\n")
    with pytest.raises(BadCandleFile, match=r"ETH-USDT_funding_bybit.csv:3: timestamps must be strictly increasing"):
        read_funding_dir(bad)
    (bad / "ETH-USDT_funding_bybit.csv").write_text("timestamp_ms,rate\n1772438400000,1.5\n")
    with pytest.raises(BadCandleFile, match=r":2: rate 1.5 is not a fraction"):
        read_funding_dir(bad)
