"""The file `python -m bot strategies new NAME` writes: a working strategy, commented for its new owner."""

from __future__ import annotations

TEMPLATE = '''\
"""{name}: a phantomdesk strategy of your own (written by `python -m bot strategies new {name}`).

A channel breakout on the slow interval: a close beyond the highest high (lowest low) of the previous
`lookback` candles proposes a trade in its direction, the stop `stop_atr` ATRs away, the target at
`reward_risk` times the stop distance. Change anything; the desk picks the file up at its next start.

The protocol (core/strategies/base.py):
- `name`: unique, written into every signal with a hash of this file, so an edited file is a new version
  (signals and replay digests change with it, and only then);
- `role`: "slow" runs on each bot's slow interval (15m by default), "fast" on its fast one (5m);
- `Params`: your parameters, a pydantic model: a default, bounds and a description for each. A bot sets
  them under `strategies: {{{name}: {{lookback: 30}}}}` and they are checked against this model.
  StrategyParams adds what the engine reads of every strategy: enabled, cooldown_candles and the regime
  gate's thresholds (adx_trend, adx_range, max_atr_percentile);
- `propose(s, ctx)`: runs on every closed candle of every symbol of your interval; return a Proposal or
  None. `s` holds that symbol's recent candles and indicators (s.last("close", 20), s.value("rsi", 1),
  s.ind.atr, s.ind.ema_fast, s.ind.adx, ... see core/market/state.py and indicators.py), `ctx` the rest
  of the market (ctx.slow(symbol), ctx.market.get(symbol, interval)). Only closed candles are there: do
  not keep candles in module-level variables or read data files yourself, that is how the future leaks
  in (`strategies check` looks for it). Keep it cheap: return early;
- `allowed(regime, side)`: the regime gate (regime.trend +1/-1/0, regime.ranging, regime.volatile).

The engine rounds your levels to the instrument's tick, sizes the trade, and follows every signal in the
phantom book whether it is taken or not. A strategy that raises is switched off for that bot with one
notice to the operator; the desk and the other strategies keep running.

    python -m bot strategies check {path}
    STRATEGIES_DIR={folder} python -m bot replay --data <candle folder> --strategies {name}
    STRATEGIES_DIR={folder} python -m bot optimize --data <candle folder> --strategy {name} --trials 100
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from core.strategies import Context, Proposal, Regime, Search, SeriesState, StrategyParams


class {cls}Params(StrategyParams):
    lookback: int = Field(20, ge=5, le=500, description="candles whose highest high / lowest low make the channel")
    stop_atr: float = Field(1.5, gt=0, le=10, description="stop distance, in ATR")
    reward_risk: float = Field(2.0, gt=0.2, le=10, description="take-profit distance / stop distance")
    # what `optimize` searches: every bounded field within its bounds, narrowed here to the ranges worth a
    # trial (a range beyond the bounds above is refused; core.strategies.OFF leaves a field unsearched)
    search_space: ClassVar[dict[str, Search]] = {{
        **StrategyParams.search_space,
        "lookback": Search(10, 100), "stop_atr": Search(0.8, 3.0, step=0.1), "reward_risk": Search(1.0, 4.0, step=0.1),
    }}


class {cls}:
    name = "{name}"
    role = "slow"
    Params = {cls}Params

    def __init__(self, params: {cls}Params) -> None:
        self.params = params

    def propose(self, s: SeriesState, ctx: Context) -> Proposal | None:
        p, c, atr = self.params, s.last_candle, s.ind.atr
        if c is None or len(s) <= p.lookback or not atr > 0:
            return None  # not enough history yet
        highs = s.last("high", p.lookback + 1)[:-1]  # the channel before this candle
        lows = s.last("low", p.lookback + 1)[:-1]
        if c.close > highs.max():
            direction = 1
        elif c.close < lows.min():
            direction = -1
        else:
            return None
        risk = p.stop_atr * atr
        return Proposal("long" if direction == 1 else "short", entry=c.close, stop=c.close - direction * risk,
                        target=c.close + direction * p.reward_risk * risk)

    def allowed(self, regime: Regime, side: str) -> bool:
        return not regime.volatile  # stand aside in a volatility burst
'''


def render(name: str, path: str, folder: str) -> str:
    cls = "".join(part.capitalize() for part in name.split("_") if part) or "Strategy"
    return TEMPLATE.format(name=name, cls=cls, path=path, folder=folder)
