"""Scalp (fast interval): with the slow interval trending, take a fast-EMA reclaim on a volume burst;
tight stop, target at reward/risk."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from core.market.state import SeriesState
from core.strategies.base import Context, Proposal, bounded_stop
from core.strategies.params import (
    OFF,
    CooldownCandles,
    MaxStopAtr,
    MinStopAtr,
    RewardRisk,
    RsiLevel,
    Search,
    StopParams,
    below,
)
from core.strategies.regime import Regime, trend_of

WARMUP = 50


class ScalpParams(StopParams):
    reward_risk: RewardRisk = 1.5
    min_stop_atr: MinStopAtr = 0.6
    max_stop_atr: MaxStopAtr = 2.0
    cooldown_candles: CooldownCandles = 6
    rsi_low: Annotated[RsiLevel, Field(description="a short needs RSI between this and 50")] = 30.0
    rsi_high: Annotated[RsiLevel, Field(description="a long needs RSI between 50 and this")] = 70.0
    volume_z: Annotated[float, Field(ge=-5, le=10, description="volume z-score the reclaim candle needs")] = 1.0
    search_space: ClassVar[dict[str, Search]] = {
        **StopParams.search_space, "reward_risk": Search(1.0, 3.0, step=0.1),
        "min_stop_atr": Search(0.3, 1.2, step=0.05), "max_stop_atr": Search(1.3, 4.0, step=0.1),
        "rsi_low": Search(15, 45, step=1), "rsi_high": Search(55, 85, step=1), "volume_z": Search(0, 3, step=0.1),
        "adx_range": OFF,  # the gate only asks for calm; the slow trend is adx_trend's
    }

    @model_validator(mode="after")
    def _rsi_band(self) -> ScalpParams:
        below(self.rsi_low, self.rsi_high, "rsi_low", "rsi_high")
        return self


class Scalp:
    name = "scalp"
    role = "fast"
    Params = ScalpParams

    def __init__(self, params: ScalpParams) -> None:
        self.params = params

    def propose(self, s: SeriesState, ctx: Context) -> Proposal | None:
        ind, c, p = s.ind, s.last_candle, self.params
        if ind.n < WARMUP or c is None or ind.vol_z < p.volume_z:
            return None
        prev_close, prev_ema = s.value("close", 1), s.value("ema_fast", 1)
        if prev_close <= prev_ema and c.close > ind.ema_fast and c.close > c.open and 50 <= ind.rsi <= p.rsi_high:
            direction = 1
            raw_stop = min(c.low, ind.swing_low if ind.swing_low < c.close else c.low)
        elif prev_close >= prev_ema and c.close < ind.ema_fast and c.close < c.open and p.rsi_low <= ind.rsi <= 50:
            direction = -1
            raw_stop = max(c.high, ind.swing_high if ind.swing_high > c.close else c.high)
        else:
            return None
        if trend_of(ctx.slow(s.symbol), p.adx_trend) != direction:
            return None
        entry = c.close
        stop = bounded_stop(entry, raw_stop, ind.atr, p, direction)
        return Proposal("long" if direction == 1 else "short", entry, stop,
                        entry + direction * p.reward_risk * abs(entry - stop))

    def allowed(self, regime: Regime, side: str) -> bool:
        return not regime.volatile
