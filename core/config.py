"""A bot's configuration: what it trades, with which strategies, how much it risks.

Validated with pydantic so a YAML/JSON file, the database row and a Telegram `/risk set` all go
through the same rules and a bad value names its field.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from core.market.candle import INTERVAL_MS, parse_interval

STRATEGY_NAMES = ("trend_pullback", "mean_reversion", "scalp")


class StrategyParams(BaseModel):
    """Parameters shared by every strategy; each strategy reads what it needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    reward_risk: float = Field(2.0, gt=0.2, le=10)  # take-profit distance / stop distance
    min_stop_atr: float = Field(0.8, gt=0, le=10)  # stop distance bounds, in ATR
    max_stop_atr: float = Field(3.0, gt=0, le=20)
    cooldown_candles: int = Field(4, ge=0, le=1000)  # after a signal, per symbol
    adx_trend: float = Field(25.0, ge=5, le=80)  # ADX at or above: trending
    adx_range: float = Field(20.0, ge=5, le=80)  # ADX at or below: ranging
    max_atr_percentile: float = Field(0.9, gt=0, le=1)  # above: volatility burst, the strategy stands aside
    rsi_low: float = Field(30.0, ge=1, le=99)
    rsi_high: float = Field(70.0, ge=1, le=99)
    volume_z: float = Field(1.0, ge=-5, le=10)  # scalp: volume burst needed

    @model_validator(mode="after")
    def _bounds(self) -> StrategyParams:
        if self.min_stop_atr >= self.max_stop_atr:
            raise ValueError("min_stop_atr must be below max_stop_atr")
        if self.rsi_low >= self.rsi_high:
            raise ValueError("rsi_low must be below rsi_high")
        return self


def _default_strategies() -> dict[str, StrategyParams]:
    return {
        "trend_pullback": StrategyParams(),
        "mean_reversion": StrategyParams(reward_risk=1.5, min_stop_atr=0.5, max_stop_atr=2.5, adx_range=22,
                                         rsi_low=35, rsi_high=65),
        "scalp": StrategyParams(reward_risk=1.5, min_stop_atr=0.6, max_stop_atr=2.0, cooldown_candles=6),
    }


class BotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str = ""
    symbols: list[str] = Field(min_length=1)
    slow_interval: str = "15"  # trend pullback and mean reversion
    fast_interval: str = "5"  # scalp
    strategies: dict[str, StrategyParams] = Field(default_factory=_default_strategies)
    capital: Decimal = Field(Decimal(10_000), gt=0)
    risk_pct: Decimal | None = Field(Decimal(1), gt=0, le=10)
    risk_usd: Decimal | None = Field(None, gt=0)
    max_leverage: Decimal = Field(Decimal(10), ge=1, le=100)
    max_positions: int = Field(5, ge=1, le=200)
    max_position_notional: Decimal | None = Field(None, gt=0)
    trailing_stop_pct: Decimal | None = Field(None, gt=0, le=50)
    breakeven_at_r: Decimal | None = Field(None, gt=0, le=10)
    phantom_timeout_candles: int = Field(96, ge=1, le=10_000)
    drawdown_guard_pct: Decimal | None = Field(Decimal(20), gt=0, le=100)
    daily_loss_limit_pct: Decimal | None = Field(Decimal(5), gt=0, le=100)
    win_rate_floor: float = Field(0.25, ge=0, le=1)  # breaker: a strategy's rolling win rate below this ...
    breaker_min_outcomes: int = Field(50, ge=1, le=200)  # ... over at least this many outcomes blocks it
    loss_cooldown_minutes: int = Field(60, ge=0, le=10_080)  # no new entry on a symbol after a loss there
    slippage_bps: float = Field(2.0, ge=0, le=500)  # paper fills
    taker_fee_pct: float = Field(0.055, ge=0, le=1)  # paper fills (Bybit's default taker fee)
    # a signal is a trade only if its stop and target are this many ticks from the entry at least ...
    min_level_ticks: int = Field(3, ge=1, le=10_000)
    # ... and its reward, after a round trip of taker fees and slippage, is at least this many R
    min_reward_r: float = Field(0.5, ge=0, le=10)
    ml_threshold: float = Field(0.0, ge=-1, le=5)  # minimum EV in R to take a scored signal
    ml_min_p: float = Field(0.0, ge=0, le=1)
    mode: Literal["paper", "live"] = "paper"
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        out = []
        for s in value:
            s = s.strip().upper()
            if not s.isalnum() or not s.endswith(("USDT", "USDC")):
                raise ValueError(f"{s!r} is not a USDT/USDC linear perpetual symbol like BTCUSDT")
            out.append(s)
        if len(set(out)) != len(out):
            raise ValueError("a symbol is listed twice")
        return out

    @field_validator("slow_interval", "fast_interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> str:
        return parse_interval(str(value))

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategies(cls, value: Any) -> Any:
        # before the parameters are checked, so `foo: null` still says "unknown strategy"; the name is in
        # ctx so a file loader can point at strategies.<name>
        unknown = sorted(str(k) for k in value if k not in STRATEGY_NAMES) if isinstance(value, dict) else []
        if unknown:
            raise PydanticCustomError("unknown_strategy", "unknown strategy '{name}' (known: {known})",
                                      {"name": unknown[0], "known": ", ".join(STRATEGY_NAMES)})
        return value

    @model_validator(mode="after")
    def _coherent(self) -> BotConfig:
        if INTERVAL_MS[self.fast_interval] >= INTERVAL_MS[self.slow_interval]:
            raise ValueError("fast_interval must be shorter than slow_interval")
        if INTERVAL_MS[self.slow_interval] % INTERVAL_MS[self.fast_interval]:
            raise ValueError("slow_interval must be a whole multiple of fast_interval")
        if self.risk_pct is None and self.risk_usd is None:
            raise ValueError("set risk_pct or risk_usd")
        if not self.name:
            self.name = self.id
        return self

    @property
    def intervals(self) -> tuple[str, str]:
        return self.slow_interval, self.fast_interval

    def enabled_strategies(self) -> dict[str, StrategyParams]:
        return {k: v for k, v in self.strategies.items() if v.enabled}
