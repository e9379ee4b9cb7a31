"""Signal: what a strategy proposes, with a deterministic id every later record derives from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

Side = Literal["long", "short"]
Action = Literal["EXECUTED", "REJECTED", "BLOCKED"]


def signal_id(bot_id: str, symbol: str, interval: str, strategy: str, version: str, time: datetime) -> str:
    """24 hex characters: the same signal always has the same id, so replays, restarts and the
    exchange's orderLinkId (≤ 36 characters) all agree on it. The strategy's version (a hash of its
    source) is part of it: a replay's digests change when a strategy's code does, and only then."""
    key = f"{bot_id}|{symbol}|{interval}|{strategy}@{version}|{time.isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Signal:
    id: str
    bot_id: str
    symbol: str
    interval: str
    strategy: str
    side: Side
    entry: Decimal  # on the instrument's tick grid
    stop_loss: Decimal
    take_profit: Decimal
    time: datetime  # close time of the candle that produced it: when it became known
    features: dict[str, float] = field(default_factory=dict, compare=False)
    strategy_version: str = ""  # core.strategies.registry.module_version of the strategy that proposed it

    @property
    def direction(self) -> int:
        return 1 if self.side == "long" else -1

    @property
    def risk(self) -> Decimal:
        return abs(self.entry - self.stop_loss)

    @property
    def reward_risk(self) -> float:
        return float(abs(self.take_profit - self.entry) / self.risk)
