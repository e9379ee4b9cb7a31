"""Strategies: trend pullback and mean reversion on the slow interval, scalp on the fast one."""

from __future__ import annotations

from core.config import BotConfig
from core.strategies.base import Context, Proposal, Strategy
from core.strategies.mean_reversion import MeanReversion
from core.strategies.scalp import Scalp
from core.strategies.trend_pullback import TrendPullback

REGISTRY: dict[str, type] = {"trend_pullback": TrendPullback, "mean_reversion": MeanReversion, "scalp": Scalp}


def build_strategies(config: BotConfig) -> list[Strategy]:
    """Enabled strategies in a fixed order (the order signals are evaluated in is part of determinism)."""
    return [REGISTRY[name](params) for name, params in sorted(config.enabled_strategies().items())]


__all__ = ["REGISTRY", "Context", "Proposal", "Strategy", "build_strategies"]
