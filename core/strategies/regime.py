"""The regime gate: trend / range / volatility from ADX, EMA alignment, ATR percentile and BTC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.market.state import SeriesState
from core.strategies.params import StrategyParams

ATR_LOOKBACK = 100


@dataclass(frozen=True, slots=True)
class Regime:
    trend: int  # +1 up, -1 down, 0 no trend
    ranging: bool
    volatile: bool
    atr_percentile: float
    btc_trend: int

    @property
    def code(self) -> int:
        """0 range, 1 trend, 2 volatility burst, 3 undecided (a feature)."""
        return 2 if self.volatile else 1 if self.trend else 0 if self.ranging else 3


def trend_of(s: SeriesState | None, adx_trend: float) -> int:
    """+1/-1 when EMAs are stacked, DI agrees and ADX is strong enough; else 0."""
    if s is None or s.ind.n < 50:
        return 0
    ind = s.ind
    if ind.adx < adx_trend:
        return 0
    if ind.ema_fast > ind.ema_mid > ind.ema_slow and ind.plus_di > ind.minus_di:
        return 1
    if ind.ema_fast < ind.ema_mid < ind.ema_slow and ind.minus_di > ind.plus_di:
        return -1
    return 0


def atr_percentile(s: SeriesState) -> float:
    """Share of the last ATR_LOOKBACK ATR values below the current one (0..1)."""
    atrs = s.last("atr", ATR_LOOKBACK)
    if len(atrs) < 2:
        return 0.5
    return float(np.count_nonzero(atrs[:-1] < atrs[-1]) / (len(atrs) - 1))


def regime_of(s: SeriesState, btc: SeriesState | None, p: StrategyParams) -> Regime:
    pct = atr_percentile(s)
    trend = trend_of(s, p.adx_trend)
    return Regime(trend=trend, ranging=s.ind.adx <= p.adx_range, volatile=pct >= p.max_atr_percentile,
                  atr_percentile=pct, btc_trend=trend if btc is s else trend_of(btc, p.adx_trend))
