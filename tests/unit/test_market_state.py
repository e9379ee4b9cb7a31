"""MarketState ring buffers, incremental indicators vs their vectorized twin, the synthetic market."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from core.market.candle import INTERVAL_MS, Candle, ms_to_dt
from core.market.indicators import Indicators, mean_std
from core.market.state import MarketState
from core.market.synthetic import (
    DEFAULT_SYMBOLS,
    REGIME_NAMES,
    SyntheticFeed,
    _regime_path,
    aggregate,
    synthetic_series,
)
from core.market.vectorized import indicators_frame
from storage.candle_files import read_candle_file
from tests.conftest import CANDLES

REAL = [
    CANDLES / "binance_spot_2020-12_2021-07" / "SOL-USDT_5m_binance.csv",
    CANDLES / "binance_spot_2020-12_2021-07" / "BTC-USDT_15m_binance.csv",
    CANDLES / "bybit_perp_2026-02" / "BTC-USDT_15m_bybit.csv",
]


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_incremental_equals_vectorized_on_real_data(path: Path) -> None:
    s, _ = read_candle_file(path)
    ind = Indicators()
    names = list(ind.snapshot())
    got = {n: np.empty(len(s)) for n in names}
    for i in range(len(s)):
        ind.update(int(s.open_ms[i]), float(s.high[i]), float(s.low[i]), float(s.close[i]), float(s.volume[i]))
        for n, v in ind.snapshot().items():
            got[n][i] = v
    want = indicators_frame(s.high, s.low, s.close, s.volume)
    for n in names:
        a, b = got[n], want[n].to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), n
        ok = ~np.isnan(a)
        assert ok.sum() > len(s) * 0.9, n  # the comparison covers (almost) every candle
        np.testing.assert_allclose(a[ok], b[ok], rtol=1e-9, atol=1e-9, err_msg=n)


def test_bollinger_and_volume_z_read_now_and_then_equal_reading_every_candle() -> None:
    """They are computed when read (most candles never read them): a reader that looks only every few candles gets
    exactly what one reading every candle gets, not a value left over from an earlier read."""
    s, _ = read_candle_file(REAL[0])
    every, sometimes = Indicators(), Indicators()
    names = ("bb_mid", "bb_std", "bb_upper", "bb_lower", "vol_z")
    compared = 0
    for i in range(3000):
        row = (int(s.open_ms[i]), float(s.high[i]), float(s.low[i]), float(s.close[i]), float(s.volume[i]))
        every.update(*row)
        sometimes.update(*row)
        now = [getattr(every, n) for n in names]
        if i % 7 == 3:
            assert [getattr(sometimes, n) for n in names] == now or i < 20  # NaN until the windows fill
            compared += i >= 20
    assert compared > 400


def test_indicator_hand_values() -> None:
    ind = Indicators()
    for i, (h, lo, c) in enumerate([(11, 9, 10), (12, 10, 11), (11.5, 10.5, 11)]):
        ind.update(i * 60_000, h, lo, c, 1.0)
    a = 2 / 21
    assert ind.ema_fast == pytest.approx((10 + a) + a * (11 - (10 + a)))
    # true ranges 2, 2, 1 -> Wilder ATR(14): 2, 2, 2 + (1-2)/14
    assert ind.atr == pytest.approx(2 - 1 / 14)
    # one gain of 1 then a change of 0: avg_gain = 1 - 1/14, avg_loss 0 -> RSI 100
    assert ind.rsi == 100.0 and math.isnan(ind.bb_mid)


def _candle(symbol: str, minute: int, price: float, interval: str = "1") -> Candle:
    return Candle(symbol, interval, ms_to_dt(minute * 60_000), price, price + 1, price - 1, price, 10.0)


def test_ring_holds_the_last_n_in_order() -> None:
    state = MarketState(capacity=5)
    for m in range(12):
        state.update(_candle("AUSDT", m, 100.0 + m))
    s = state.get("AUSDT", "1")
    assert s is not None and len(s) == 5 and s.count == 12
    assert s.last("close", 5).tolist() == [107, 108, 109, 110, 111]
    assert s.last("close", 3).tolist() == [109, 110, 111]
    assert s.last("close", 50).tolist() == [107, 108, 109, 110, 111]
    assert s.value("close") == 111 and s.value("close", 4) == 107 and math.isnan(s.value("close", 5))


def test_duplicates_ignored_and_gaps_reported() -> None:
    state = MarketState()
    assert state.update(_candle("AUSDT", 0, 100)).gap is None
    assert state.update(_candle("AUSDT", 1, 101)).series is not None
    dup = state.update(_candle("AUSDT", 1, 999))
    assert dup.series is None
    older = state.update(_candle("AUSDT", 0, 999))
    assert older.series is None
    up = state.update(_candle("AUSDT", 5, 102))
    assert up.gap is not None and up.gap.missing == 3
    s = state.get("AUSDT", "1")
    assert s is not None and s.last("close", 10).tolist() == [100, 101, 102]


def test_memory_is_bounded() -> None:
    state = MarketState(capacity=1000)
    for sym in range(200):
        for m in range(3):
            state.update(_candle(f"S{sym}USDT", m, 10.0))
            state.update(_candle(f"S{sym}USDT", m * 3, 10.0, "3"))
    before = state.nbytes()
    for m in range(3, 1500):  # keep pushing past capacity: nothing grows
        state.update(_candle("S0USDT", m, 10.0))
    assert state.nbytes() == before
    assert before < 100 * 1024 * 1024


def test_synthetic_is_seeded_and_regime_switching() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    a = list(SyntheticFeed(start=start, days=3, warmup_days=1, seed=11).candles())
    b = list(SyntheticFeed(start=start, days=3, warmup_days=1, seed=11).candles())
    c = list(SyntheticFeed(start=start, days=3, warmup_days=1, seed=12).candles())
    assert a == b and a != c
    for x in a:
        assert x.low <= min(x.open, x.close) <= max(x.open, x.close) <= x.high and x.volume >= 0
    regimes = _regime_path(np.random.default_rng(1), 60 * 1440)
    assert set(np.unique(regimes)) == set(range(len(REGIME_NAMES)))  # every regime occurs in 60 days


def test_synthetic_symbols_are_correlated_and_aggregation_exact() -> None:
    series = synthetic_series(DEFAULT_SYMBOLS[:2], ("1", "15"), datetime(2026, 1, 1, tzinfo=UTC), 20, seed=3)
    btc1, btc15, eth1, _ = series
    r1 = np.diff(np.log(btc15.close))
    r2 = np.diff(np.log(series[3].close))
    assert 0.2 < np.corrcoef(r1, r2)[0, 1] < 0.95
    again = aggregate(btc1, "15")
    assert np.array_equal(again.close, btc15.close) and np.array_equal(again.high, btc15.high)
    assert btc15.high[0] == btc1.high[:15].max() and btc15.open[0] == btc1.open[0]
    assert (np.diff(btc15.open_ms) == INTERVAL_MS["15"]).all()
    assert eth1.symbol == "ETHUSDT"


def test_mean_std_is_the_plain_formula_and_cannot_overflow() -> None:
    window = [70159.1, 70766.5, 70021.3, 70320.0, 70001.25]
    mean = sum(window) / 5
    assert mean_std(window) == (mean, math.sqrt(sum((x - mean) ** 2 for x in window) / 5))  # bit for bit
    for scale in (1e154, 1e200, 1e300):  # (x - mean) ** 2 used to raise OverflowError from ~1e154 on
        m, s = mean_std([x * scale for x in window])
        assert m == pytest.approx(mean * scale, rel=1e-12) and s == pytest.approx(mean_std(window)[1] * scale, rel=1e-9)
    assert mean_std([1e308, 1.7e308, 1e308]) == pytest.approx((1.2333333333333333e308, 3.2998316455372216e307))


def test_a_volume_of_1e300_moves_the_z_score_not_the_process() -> None:
    ind = Indicators()
    for i in range(40):
        volume = 1e300 if i == 30 else 10.0 + i % 3
        ind.update(i * 60_000, 101.0, 99.0, 100.0 + i % 5, volume)
        if i == 30:
            assert ind.vol_z == pytest.approx(math.sqrt(19))  # one outlier among 20: z = sqrt(n - 1)
    assert not any(math.isinf(v) for v in ind.snapshot().values())  # NaN only where undefined (no swing yet)
    assert math.isfinite(ind.vol_z) and math.isfinite(ind.rsi)
