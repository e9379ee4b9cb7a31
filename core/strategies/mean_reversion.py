"""Mean reversion (slow interval): in a range, fade a close back inside the Bollinger band after a
stretch beyond it with RSI at an extreme; target the middle band."""

from __future__ import annotations

from core.config import StrategyParams
from core.market.state import SeriesState
from core.strategies.base import Context, Proposal, bounded_stop
from core.strategies.regime import Regime

WARMUP = 50
MIN_REWARD_RISK = 1.0  # the middle band must be at least one stop away


class MeanReversion:
    name = "mean_reversion"
    role = "slow"

    def __init__(self, params: StrategyParams) -> None:
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
