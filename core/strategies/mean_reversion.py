"""Mean reversion (slow interval): in a range, fade a close back inside the Bollinger band after a
stretch beyond it with RSI at an extreme; target the middle band."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from core.market.state import SeriesState
from core.strategies.base import Context, Proposal, bounded_stop
from core.strategies.params import OFF, AdxRange, MaxStopAtr, MinStopAtr, RsiLevel, Search, StopParams, below
from core.strategies.regime import Regime

WARMUP = 50
MIN_REWARD_RISK = 1.0  # the middle band must be at least one stop away


class MeanReversionParams(StopParams):
    min_stop_atr: MinStopAtr = 0.5
    max_stop_atr: MaxStopAtr = 2.5
    adx_range: AdxRange = 22.0
    rsi_low: Annotated[RsiLevel, Field(description="a long needs RSI at or below this within 3 candles")] = 35.0
    rsi_high: Annotated[RsiLevel, Field(description="a short needs RSI at or above this within 3 candles")] = 65.0
    search_space: ClassVar[dict[str, Search]] = {
        **StopParams.search_space, "rsi_low": Search(15, 45, step=1), "rsi_high": Search(55, 85, step=1),
        "adx_trend": OFF,  # the gate only asks for a range
    }

    @model_validator(mode="after")
    def _rsi_band(self) -> MeanReversionParams:
        below(self.rsi_low, self.rsi_high, "rsi_low", "rsi_high")
        return self


class MeanReversion:
    name = "mean_reversion"
    role = "slow"
    Params = MeanReversionParams

    def __init__(self, params: MeanReversionParams) -> None:
        self.params = params

    def propose(self, s: SeriesState, ctx: Context) -> Proposal | None:
        ind, c, p = s.ind, s.last_candle, self.params
        if ind.n < WARMUP or c is None or ind.adx > p.adx_range:
            return None
        rsi_recent = s.last("rsi", 3)
        if c.low < ind.bb_lower < c.close and c.close > c.open and rsi_recent.min() <= p.rsi_low:
            direction, raw_stop = 1, c.low - 0.3 * ind.atr
        elif c.high > ind.bb_upper > c.close and c.close < c.open and rsi_recent.max() >= p.rsi_high:
            direction, raw_stop = -1, c.high + 0.3 * ind.atr
        else:
            return None
        entry = c.close
        stop = bounded_stop(entry, raw_stop, ind.atr, p, direction)
        target = ind.bb_mid
        if (target - entry) * direction < MIN_REWARD_RISK * abs(entry - stop):
            return None
        return Proposal("long" if direction == 1 else "short", entry, stop, target)

    def allowed(self, regime: Regime, side: str) -> bool:
        return regime.ranging and not regime.volatile
