"""The universe rule over candle files: 24 h turnover at the replay's market time, and refreshes at fixed
market times."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np

from core.market.candle import dt_to_ms
from core.market.series import CandleSeries
from core.universe import UniverseRule
from core.universe_replay import SeriesDirectory, UniverseGate
from storage.candle_files import read_candle_dir
from tests.conftest import CANDLES

DATA = CANDLES / "binance_spot_2020-12_2021-07"
NOW = datetime(2021, 5, 10, 13, 0, tzinfo=UTC)


def _by_hand(pair: str, now: datetime) -> float:
    """close × volume summed over the 5m candles that opened in the 24 h before `now` and closed by then."""
    lo, hi = dt_to_ms(now - timedelta(days=1)), dt_to_ms(now) - 300_000
    with (DATA / f"{pair}-USDT_5m_binance.csv").open() as f:
        return sum(float(r["close"]) * float(r["volume"]) for r in csv.DictReader(f)
                   if lo <= int(r["timestamp_ms"]) <= hi)


def test_turnover_from_the_files_at_market_time() -> None:
    directory = SeriesDirectory(read_candle_dir(DATA, None, ["15", "5"]))
    got = {t.symbol: t.turnover_24h for t in directory.turnovers_at(NOW)}
    assert set(got) == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"}
    for pair in ("BTC", "ETH", "SOL", "XRP"):
        assert abs(float(got[f"{pair}USDT"]) / _by_hand(pair, NOW) - 1) < 1e-9
    assert directory.estimated == ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")  # no turnover column: close × volume
    launched = {lst.symbol: lst.launched for lst in directory.listings_now()}
    assert launched["BTCUSDT"] == datetime(2020, 12, 1, tzinfo=UTC)


def test_a_turnover_column_is_summed_as_it_is() -> None:
    ms = np.arange(0, 400, dtype=np.int64) * 300_000
    ones = np.ones(400)
    series = CandleSeries("AAAUSDT", "5", ms, ones, ones, ones, ones, ones, np.full(400, 7.0))
    directory = SeriesDirectory([series])
    [t] = directory.turnovers_at(datetime.fromtimestamp(400 * 300, UTC))
    assert t.turnover_24h == Decimal("2016.0") and directory.estimated == ()  # 288 candles of 7


def test_the_gate_reselects_at_fixed_market_times_only() -> None:
    directory = SeriesDirectory(read_candle_dir(DATA, None, ["15", "5"]))
    gate = UniverseGate(UniverseRule(top=2), directory, timedelta(hours=1))
    start = dt_to_ms(NOW) + 5 * 60_000
    first = gate.at(start)
    assert first is not None and len(first.symbols) == 2 and first.at == datetime.fromtimestamp(start / 1000, UTC)
    assert gate.at(start + 30 * 60_000) is None  # before the next hour: no selection at all
    gate.at(dt_to_ms(NOW) + 3_600_000)
    assert gate.current is not None and gate.current.at == NOW + timedelta(hours=1)


def test_a_bad_universe_argument_is_one_line_naming_the_field() -> None:
    import argparse

    import pytest

    from bot.replay import ReplayError, _universe_rule

    for text, says in (('{"top": 0}', "--universe: top: "), ('{"top": 5', "--universe: Invalid JSON"),
                       ('{"exclude": ["BTC"]}', "--universe: exclude: 'BTC' is not")):
        with pytest.raises(ReplayError) as caught:
            _universe_rule(argparse.Namespace(universe=text))
        assert str(caught.value).startswith(says) and "\n" not in str(caught.value)
