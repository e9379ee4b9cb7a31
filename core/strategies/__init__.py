"""Strategies are plugins: a class with a name, a role, its own parameter model (Params), propose() and
allowed() (core.strategies.base.Strategy). The three built-ins register here; user strategies register
the same way from bot/ (bot/strategies.py). What a strategy author imports is exported below."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.market.state import SeriesState
from core.strategies.base import Context, Proposal, Role, Strategy, bounded_stop
from core.strategies.mean_reversion import MeanReversion
from core.strategies.params import OFF, Search, StopParams, StrategyParams
from core.strategies.regime import Regime
from core.strategies.registry import BUILTIN, STRATEGIES, StrategyRefused, StrategySpec
from core.strategies.scalp import Scalp
from core.strategies.trend_pullback import TrendPullback

if TYPE_CHECKING:
    from core.config import BotConfig

for _builtin in (TrendPullback, MeanReversion, Scalp):
    STRATEGIES.register(_builtin, BUILTIN)


@dataclass
class Lineup:
    """What a bot runs: its strategies in evaluation order, their versions, and those it cannot run."""

    strategies: list[Strategy] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # name -> why


def build_strategies(config: BotConfig) -> Lineup:
    """Enabled strategies in a fixed order (the order signals are evaluated in is part of determinism). A
    strategy that cannot be built is left out and said why, never an error: the bot runs without it."""
    lineup = Lineup(unavailable={name: u.why for name, u in sorted(config.unloaded.items()) if u.enabled})
    for name, params in sorted(config.enabled_strategies().items()):
        spec = STRATEGIES.get(name)
        if spec is None:  # validated against the registry, but it may have changed since
            lineup.unavailable[name] = "not loaded in this process"
            continue
        try:
            strategy = spec.build(params)
        except Exception as exc:  # the user's constructor
            lineup.unavailable[name] = f"its constructor raised {type(exc).__name__}: {exc}"
            continue
        lineup.strategies.append(strategy)
        lineup.versions[name] = spec.version
    return lineup


__all__ = ["OFF", "STRATEGIES", "Context", "Lineup", "Proposal", "Regime", "Role", "Search", "SeriesState",
           "StopParams", "Strategy", "StrategyParams", "StrategyRefused", "StrategySpec", "bounded_stop",
           "build_strategies"]
