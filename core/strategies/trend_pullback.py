"""Trend pullback (slow interval): in an established trend, buy the dip into the fast EMA once the
candle closes back in the trend's direction; stop beyond the swing, target at reward/risk."""

from __future__ import annotations

from typing import ClassVar

from core.market.state import SeriesState
from core.strategies.base import Context, Proposal, bounded_stop
from core.strategies.params import OFF, RewardRisk, Search, StopParams
from core.strategies.regime import Regime

WARMUP = 200  # candles before the slow EMA means anything


class TrendPullbackParams(StopParams):
    reward_risk: RewardRisk = 2.0
    search_space: ClassVar[dict[str, Search]] = {
        **StopParams.search_space, "reward_risk": Search(1.0, 4.0, step=0.1),
        "adx_range": OFF,  # the gate only asks for a trend
    }


class TrendPullback:
    name = "trend_pullback"
    role = "slow"
    Params = TrendPullbackParams

    def __init__(self, params: TrendPullbackParams) -> None:
        self.params = params

    def propose(self, s: SeriesState, ctx: Context) -> Proposal | None:
        ind, c = s.ind, s.last_candle
        if ind.n < WARMUP or c is None or ind.adx < self.params.adx_trend:
            return None
        atr = ind.atr
        if ind.ema_fast > ind.ema_mid > ind.ema_slow and ind.plus_di > ind.minus_di:
            direction = 1
            touched = c.low <= ind.ema_fast + 0.2 * atr and c.close > ind.ema_fast and c.close > c.open
            swing = ind.swing_low if ind.swing_low < c.close else c.low
            raw_stop = min(c.low, swing) - 0.2 * atr
        elif ind.ema_fast < ind.ema_mid < ind.ema_slow and ind.minus_di > ind.plus_di:
            direction = -1
            touched = c.high >= ind.ema_fast - 0.2 * atr and c.close < ind.ema_fast and c.close < c.open
            swing = ind.swing_high if ind.swing_high > c.close else c.high
            raw_stop = max(c.high, swing) + 0.2 * atr
        else:
            return None
        rsi_lo, rsi_hi = (40.0, 70.0) if direction == 1 else (30.0, 60.0)  # momentum left, not exhausted
        if not touched or not rsi_lo <= ind.rsi <= rsi_hi:
            return None
        entry = c.close
        stop = bounded_stop(entry, raw_stop, atr, self.params, direction)
        target = entry + direction * self.params.reward_risk * abs(entry - stop)
        return Proposal("long" if direction == 1 else "short", entry, stop, target)

    def allowed(self, regime: Regime, side: str) -> bool:
        direction = 1 if side == "long" else -1
        return regime.trend == direction and not regime.volatile and regime.btc_trend != -direction
