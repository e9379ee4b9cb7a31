"""The universe rule: which symbols a bot trades when its symbols are a rule, and why each is in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from core.config import BotConfig
from core.universe import Listing, Turnover, UniverseRule, Why, by_hand, change, select

NOW = datetime(2026, 3, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=400)


def listing(symbol: str, *, status: str = "Trading", quote: str = "USDT", age_days: int = 400) -> Listing:
    return Listing(symbol, status, quote, NOW - timedelta(days=age_days))


def turnovers(**values: int) -> list[Turnover]:
    return [Turnover(s, Decimal(v)) for s, v in values.items()]


def test_top_n_by_turnover_with_rank_and_turnover() -> None:
    lst = [listing(s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")]
    got = select(UniverseRule(top=2), lst, turnovers(BTCUSDT=900, ETHUSDT=500, SOLUSDT=700, XRPUSDT=100), NOW)
    assert got.universe.symbols == ("BTCUSDT", "SOLUSDT")
    sol = got.universe.member("SOLUSDT")
    assert sol is not None and sol.why is Why.RANKED and sol.rank == 2 and sol.turnover_24h == 700
    assert got.universe.eligible == 4
    assert "#2 by 24 h turnover" in sol.describe()


def test_filters_status_quote_age_turnover_floor_and_exclude() -> None:
    lst = [listing("BTCUSDT"), listing("ETHUSDT"), listing("NEWUSDT", age_days=3),
           listing("DEADUSDT", status="Closed"), listing("BTCUSDC", quote="USDC"), listing("LOWUSDT"),
           listing("NOTICKUSDT")]
    rule = UniverseRule(top=10, min_turnover_usd=Decimal(50), min_age_days=30, exclude=["ETHUSDT"])
    got = select(rule, lst, turnovers(BTCUSDT=900, ETHUSDT=800, NEWUSDT=700, DEADUSDT=600, BTCUSDC=999, LOWUSDT=10),
                 NOW)
    assert got.universe.symbols == ("BTCUSDT",)
    reasons = {r.symbol: r.reason for r in got.rejected}
    assert reasons["ETHUSDT"] == "excluded by hand"
    assert "under 30 days" in reasons["NEWUSDT"]
    assert "below 50" in reasons["LOWUSDT"]
    assert reasons["NOTICKUSDT"] == "no 24 h turnover reported"
    assert "DEADUSDT" not in reasons and "BTCUSDC" not in reasons  # not Trading / not USDT: never candidates


def test_included_by_hand_beside_the_top_and_only_while_trading() -> None:
    lst = [listing("BTCUSDT"), listing("ETHUSDT"), listing("DOGEUSDT"), listing("OLDUSDT", status="Closed")]
    rule = UniverseRule(top=1, include=["DOGEUSDT", "BTCUSDT", "OLDUSDT", "GONEUSDT"])
    got = select(rule, lst, turnovers(BTCUSDT=900, ETHUSDT=800, DOGEUSDT=5), NOW).universe
    assert got.symbols == ("BTCUSDT", "DOGEUSDT")
    assert got.member("BTCUSDT").why is Why.RANKED  # type: ignore[union-attr]
    doge = got.member("DOGEUSDT")
    assert doge is not None and doge.why is Why.INCLUDED and doge.rank is None and doge.turnover_24h == 5
    assert got.unavailable == ("OLDUSDT", "GONEUSDT")


def test_ties_are_deterministic_and_order_of_input_does_not_matter() -> None:
    lst = [listing(s) for s in ("CCCUSDT", "AAAUSDT", "BBBUSDT")]
    t = turnovers(CCCUSDT=100, AAAUSDT=100, BBBUSDT=100)
    a = select(UniverseRule(top=2), lst, t, NOW).universe
    b = select(UniverseRule(top=2), list(reversed(lst)), list(reversed(t)), NOW).universe
    assert a == b and a.symbols == ("AAAUSDT", "BBBUSDT")


def test_age_is_measured_from_the_now_passed_in() -> None:
    lst = [listing("NEWUSDT", age_days=10)]
    rule = UniverseRule(min_age_days=14)
    assert select(rule, lst, turnovers(NEWUSDT=1), NOW).universe.symbols == ()
    assert select(rule, lst, turnovers(NEWUSDT=1), NOW + timedelta(days=4)).universe.symbols == ("NEWUSDT",)


def test_change_and_by_hand() -> None:
    assert change(["A", "B"], ["B", "C"]).added == ("C",) and change(["A", "B"], ["B", "C"]).removed == ("A",)
    assert not change(["A"], ["A"])
    assert by_hand(UniverseRule(include=["BTCUSDT"]), NOW).symbols == ("BTCUSDT",)


def test_bot_config_takes_a_rule_instead_of_a_list() -> None:
    cfg = BotConfig(id="u", universe={"top": 20, "exclude": ["dogeusdt"]})  # type: ignore[arg-type]
    assert cfg.symbols == [] and cfg.universe is not None and cfg.universe.exclude == ["DOGEUSDT"]
    written = BotConfig.model_validate({"id": "u", "symbols": {"top": 5}})  # the rule where the list would be
    assert written.universe == UniverseRule(top=5)


@pytest.mark.parametrize(("doc", "says"), [
    ({"id": "u"}, "symbols\n  Field required"),
    ({"id": "u", "symbols": []}, "list symbols, or give a universe rule"),
    ({"id": "u", "symbols": ["BTCUSDT"], "universe": {"top": 3}}, "symbols and universe both set"),
    ({"id": "u", "universe": {"top": 0}}, "universe.top"),
    ({"id": "u", "universe": {"top": 501}}, "universe.top"),
    ({"id": "u", "universe": {"min_turnover_usd": -1}}, "universe.min_turnover_usd"),
    ({"id": "u", "universe": {"include": ["BTCUSDT"], "exclude": ["btcusdt"]}},
     "BTCUSDT is both included and excluded"),
    ({"id": "u", "universe": {"exclude": ["BTC-USD"]}}, "is not a USDT/USDC linear perpetual symbol"),
    ({"id": "u", "universe": {"topp": 3}}, "universe.topp"),
])
def test_bad_rules_name_their_field(doc: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError) as err:
        BotConfig.model_validate(doc)
    assert says in str(err.value), str(err.value)


def test_a_bot_keeps_the_symbols_of_its_open_trades_and_phantoms() -> None:
    """What the host's feed must keep carrying for a bot whose universe moved on (bot/runtime.py: in_use)."""
    from typing import Any

    from bot.runtime import BotRuntime
    from core.funding import FundingSchedule
    from core.ledger import TradeRecord
    from core.runner import paper_engine
    from core.signal import Signal
    from core.trader import OpenTrade

    config = BotConfig(id="u", universe={"top": 2})  # type: ignore[arg-type]
    engine, trader = paper_engine(config, FundingSchedule())
    none: Any = None
    bot = BotRuntime(config, engine, trader, none, none, none, none, ready=True)
    assert bot.in_use() == set() and bot.symbols == ()
    signal = Signal("p" * 24, "u", "SOLUSDT", "5", "scalp", "long", Decimal(100), Decimal(97), Decimal(103), NOW)
    phantom = engine.book.record(signal, "REJECTED", "max positions")
    record = TradeRecord("t1", "u", "s1", "XRPUSDT", "scalp", "long", "open", "paper", Decimal(1), Decimal(1),
                         Decimal(1), NOW, Decimal("0.9"), Decimal("1.2"))
    trader.trades["t1"] = OpenTrade(record, Decimal("0.9"))
    assert bot.in_use() == {"SOLUSDT", "XRPUSDT"}
    engine.book.active.clear()  # the phantom ended, the trade closed
    del trader.trades["t1"]
    assert bot.in_use() == set() and phantom.symbol == "SOLUSDT"
