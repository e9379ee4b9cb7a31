"""The strategy protocol, the proposal a strategy makes, and the market context it may read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from core.market.state import MarketState, SeriesState
from core.strategies.params import StopParams, StrategyParams
from core.strategies.regime import Regime

Role = Literal["slow", "fast"]


@dataclass(frozen=True, slots=True)
class Proposal:
    """Side and raw (unrounded) levels; the engine rounds them to the instrument tick."""

    side: Literal["long", "short"]
    entry: float
    stop: float
    target: float


@dataclass(frozen=True, slots=True)
class Context:
    market: MarketState
    slow_interval: str
    fast_interval: str
    btc_symbol: str = "BTCUSDT"

    def slow(self, symbol: str) -> SeriesState | None:
        return self.market.get(symbol, self.slow_interval)


class Strategy(Protocol):
    """What the engine runs. A class is checked against this when it registers
    (core.strategies.registry.check_class) and is built with `cls(params)`, params an instance of `Params`."""

    name: ClassVar[str]  # unique; part of every signal id
    role: ClassVar[Role]  # which interval it runs on
    Params: ClassVar[type[StrategyParams]]  # its own parameter model
    params: StrategyParams

    def propose(self, s: SeriesState, ctx: Context) -> Proposal | None:
        """Look at the just-closed candle of `s`; a proposal or None. Cheap checks first: this runs on
        every closed candle of every symbol."""
        ...

    def allowed(self, regime: Regime, side: str) -> bool:
        """The regime gate: may this strategy fire in this regime, on this side?"""
        ...


def bounded_stop(entry: float, raw_stop: float, atr: float, p: StopParams, direction: int) -> float:
    """The stop at its structural level, but no nearer than min_stop_atr and no farther than max_stop_atr."""
    distance = min(max((entry - raw_stop) * direction, p.min_stop_atr * atr), p.max_stop_atr * atr)
    return entry - direction * distance
