"""The sane-candle rule (core/market/sanity.py): each refusal reason, its bounds, and one rule for a candle,
a series and a file."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from core.market.candle import Candle
from core.market.sanity import (
    CLOSE_TOLERANCE,
    MAX_PRICE,
    MAX_VOLUME,
    MIN_PRICE,
    Refusal,
    closed_by,
    first_refusals,
    refusal,
    sane_series,
)
from core.market.series import CandleSeries
from storage.candle_files import BadCandleFile, read_candle_file

T = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
NOW = T + timedelta(hours=1)
GOOD = Candle("BTCUSDT", "15", T, 100.0, 101.0, 99.0, 100.5, 12.5, 1250.0)


@pytest.mark.parametrize(("changes", "reason"), [
    ({"close": math.nan}, Refusal.NOT_FINITE),
    ({"high": math.inf}, Refusal.NOT_FINITE),
    ({"volume": -math.inf}, Refusal.NOT_FINITE),
    ({"turnover": math.inf}, Refusal.NOT_FINITE),
    ({"open": 0.0}, Refusal.PRICE_NOT_POSITIVE),
    ({"low": -5.0}, Refusal.PRICE_NOT_POSITIVE),
    ({"high": 1e300}, Refusal.PRICE_OUT_OF_RANGE),
    ({"low": 1e-12, "open": 1e-12}, Refusal.PRICE_OUT_OF_RANGE),
    ({"high": 98.0}, Refusal.HIGH_BELOW_LOW),
    ({"high": 100.2}, Refusal.HIGH_BELOW_BODY),
    ({"low": 100.1}, Refusal.LOW_ABOVE_BODY),
    ({"volume": -1.0}, Refusal.VOLUME_NEGATIVE),
    ({"turnover": -0.5}, Refusal.VOLUME_NEGATIVE),
    ({"volume": 1e160}, Refusal.VOLUME_TOO_LARGE),
    ({"turnover": 1e308}, Refusal.VOLUME_TOO_LARGE),
    ({"open_time": datetime(1969, 12, 31, 23, 45, tzinfo=UTC)}, Refusal.BAD_OPEN_TIME),
    ({"open_time": NOW + timedelta(days=7)}, Refusal.NOT_CLOSED),
    ({"open_time": NOW - timedelta(minutes=15) + CLOSE_TOLERANCE + timedelta(milliseconds=1)}, Refusal.NOT_CLOSED),
])
def test_each_refusal_reason(changes: dict[str, object], reason: Refusal) -> None:
    assert refusal(GOOD, NOW) is None
    bad = replace(GOOD, **changes)  # type: ignore[arg-type]
    assert refusal(bad, NOW) is reason
    assert reason.text  # a person-readable reason for files and logs


def test_bounds_are_inclusive_and_turnover_may_be_unknown() -> None:
    assert refusal(replace(GOOD, high=MAX_PRICE), NOW) is None
    assert refusal(replace(GOOD, open=MIN_PRICE, low=MIN_PRICE, close=MIN_PRICE, high=MIN_PRICE), NOW) is None
    assert refusal(replace(GOOD, volume=MAX_VOLUME, turnover=MAX_VOLUME), NOW) is None
    assert refusal(replace(GOOD, volume=0.0, turnover=0.0), NOW) is None
    assert refusal(replace(GOOD, turnover=None), NOW) is None
    assert refusal(replace(GOOD, turnover=math.nan), NOW) is None  # NaN turnover = unknown, as in CandleSeries


def test_closed_within_the_tolerance_and_no_clock_means_no_time_check() -> None:
    just_closed = NOW - timedelta(minutes=15)
    assert refusal(replace(GOOD, open_time=just_closed), NOW) is None
    skewed = just_closed + CLOSE_TOLERANCE  # our clock is up to CLOSE_TOLERANCE behind the exchange's
    assert refusal(replace(GOOD, open_time=skewed), NOW) is None and closed_by(skewed, "15", NOW)
    future = replace(GOOD, open_time=NOW + timedelta(days=7))
    assert refusal(future, None) is None  # a replay of old files has no "now"
    assert not closed_by(future.open_time, "15", NOW)


def test_the_first_reason_names_a_candle_refused_for_several() -> None:
    # NaN close and a negative volume and from the future: NOT_FINITE comes first
    bad = replace(GOOD, close=math.nan, volume=-1.0, open_time=NOW + timedelta(days=1))
    assert refusal(bad, NOW) is Refusal.NOT_FINITE
    assert refusal(replace(GOOD, high=98.0), NOW) is Refusal.HIGH_BELOW_LOW  # not HIGH_BELOW_BODY


def test_series_and_single_candles_follow_one_rule() -> None:
    candles = [
        GOOD,
        replace(GOOD, open_time=T + timedelta(minutes=15), volume=1e160),
        replace(GOOD, open_time=T + timedelta(minutes=30)),
        replace(GOOD, open_time=T + timedelta(minutes=45), low=101.5),
        replace(GOOD, open_time=NOW + timedelta(days=7)),
    ]
    s = CandleSeries.from_candles("BTCUSDT", "15", candles)
    reasons = first_refusals(s.open_ms, s.interval, s.open, s.high, s.low, s.close, s.volume, s.turnover, NOW)
    assert reasons == [refusal(c, NOW) for c in candles] == [
        None, Refusal.VOLUME_TOO_LARGE, None, Refusal.HIGH_BELOW_LOW, Refusal.NOT_CLOSED]
    sane, refused = sane_series(s, NOW)
    assert list(sane.candles()) == [candles[0], candles[2]]
    assert refused == {Refusal.VOLUME_TOO_LARGE: 1, Refusal.HIGH_BELOW_LOW: 1, Refusal.NOT_CLOSED: 1}
    same, none = sane_series(sane, NOW)
    assert same is sane and none == {}


HEADER = "timestamp_ms,open,high,low,close,volume,turnover\n"
ROW = "1700000100000,10,11,9,10.5,100,1000\n"


@pytest.mark.parametrize(("row", "reason"), [
    ("1700000400000,10,11,9,10.5,1e160,1\n", Refusal.VOLUME_TOO_LARGE),
    ("1700000400000,10,11,9,10.5,100,1e308\n", Refusal.VOLUME_TOO_LARGE),
    ("1700000400000,10,1e300,9,10.5,100,1\n", Refusal.PRICE_OUT_OF_RANGE),
    ("1700000400000,10,11,9,inf,100,1\n", Refusal.NOT_FINITE),
    ("1700000400000,10,11,9,10.5,1e309,1\n", Refusal.NOT_FINITE),
    ("1700000400000,10,11,9,10.5,100,-3\n", Refusal.VOLUME_NEGATIVE),
    ("30000000000000000000,10,11,9,10.5,100,1\n", Refusal.BAD_OPEN_TIME),  # int64 would overflow
])
def test_files_name_absurd_values_with_file_line_and_reason(tmp_path: Path, row: str, reason: Refusal) -> None:
    path = tmp_path / "ABC-USDT_5m_test.csv"
    path.write_text(HEADER + ROW + row)
    with pytest.raises(BadCandleFile) as err:
        read_candle_file(path)
    assert str(err.value) == f"{path.name}:3: {reason.text}"
    series, bad = read_candle_file(path, skip_bad=True)
    assert len(series) == 1 and [(b.line, b.reason) for b in bad] == [(3, reason.text)]


def test_an_import_refuses_a_candle_that_has_not_closed(tmp_path: Path) -> None:
    path = tmp_path / "ABC-USDT_5m_test.csv"
    path.write_text(HEADER + ROW + "1700000400000,10,11,9,10.5,100,1\n")
    read_candle_file(path)  # a replay has no "now"
    now = datetime.fromtimestamp(1_700_000_400, UTC) + timedelta(minutes=2)  # the second candle is still open
    with pytest.raises(BadCandleFile, match=re.escape(f":3: {Refusal.NOT_CLOSED.text}")):
        read_candle_file(path, now=now)
    assert np.array_equal(read_candle_file(path, now=now + timedelta(minutes=3))[0].volume, [100.0, 100.0])
