"""A bot's configuration: what it trades, with which strategies, how much it risks.

Validated with pydantic so a YAML/JSON file, the database row and a Telegram `/risk set` all go
through the same rules and a bad value names its field.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from core.market.candle import INTERVAL_MS, parse_interval
from core.strategies import STRATEGIES, StrategyParams
from core.strategies.params import first_error
from core.universe import UniverseRule, symbol_list

BUILTINS = ("trend_pullback", "mean_reversion", "scalp")  # a bot's strategies when its file names none


@dataclass(frozen=True, slots=True)
class UnloadedStrategy:
    """A stored strategy this process cannot run: its class did not load, or its stored parameters no longer
    fit its model. Kept as stored, so that saving the bot (a /risk change) does not drop it."""

    params: dict[str, Any]  # as stored: the shape of a model this process does not have
    why: str

    @property
    def enabled(self) -> bool:
        return self.params.get("enabled", True) is not False


def _default_strategies() -> dict[str, StrategyParams]:
    return {name: spec.params() for name in BUILTINS if (spec := STRATEGIES.get(name)) is not None}


@lru_cache(maxsize=256)
def _shape(models: tuple[tuple[str, type[StrategyParams]], ...]) -> type[BaseModel]:
    """A model with one field per named strategy, so pydantic checks each against its own model and names
    the path (strategies.<name>.<field>). Fields are s0, s1...: a strategy may be called `json` or `copy`."""
    fields: dict[str, Any] = {f"s{i}": (model, Field(alias=name)) for i, (name, model) in enumerate(models)}
    return create_model("Strategies", __config__=ConfigDict(extra="forbid"), **fields)


def _stored_split(value: dict[str, Any]) -> tuple[dict[str, Any], dict[str, UnloadedStrategy]]:
    """A stored configuration: the strategies this process can run, and those it cannot (with why)."""
    usable: dict[str, Any] = {}
    unloaded: dict[str, UnloadedStrategy] = {}
    for name, params in value.items():
        spec = STRATEGIES.get(str(name))
        raw = params if isinstance(params, dict) else {}
        if spec is None:
            unloaded[name] = UnloadedStrategy(raw, "not loaded in this process (its file or package is missing, "
                                                   "or failed to load: see the log)")
            continue
        try:
            usable[name] = spec.params.model_validate(params)
        except ValidationError as exc:
            unloaded[name] = UnloadedStrategy(raw, f"its stored parameters no longer fit its model: {first_error(exc)}")
    return usable, unloaded


BotMode = Literal["paper", "live", "replay"]


class BotStatus(StrEnum):
    """The operator's word on a bot (stored): running, paused by an operator, or halted by a guard."""
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"


class BotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str = ""
    symbols: list[str]  # a fixed list, or empty with a `universe` rule (then it may be left out)
    universe: UniverseRule | None = None  # the symbols as a rule (core/universe.py), refreshed on a schedule
    slow_interval: str = "15"  # trend pullback and mean reversion
    fast_interval: str = "5"  # scalp
    strategies: dict[str, SerializeAsAny[StrategyParams]] = Field(default_factory=_default_strategies)
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
    # live account settings (README "Account settings"): the margin mode set on the account at start (None: left
    # as the account has it; on a unified account it is account-wide) and, per symbol, the leverage max_leverage
    margin_mode: Literal["isolated", "cross"] | None = None
    # entries: a market order, or a post-only limit at the signal's entry price resting entry_timeout_s ...
    entry_order: Literal["market", "limit"] = "market"
    entry_timeout_s: int = Field(60, ge=5, le=3600)
    # ... then cancelled; with "market" a market entry follows if the price is within fallback_max_move_bps of the
    # limit (else the entry is skipped); with "skip" the signal is not traded
    entry_fallback: Literal["market", "skip"] = "skip"
    fallback_max_move_bps: float = Field(20.0, ge=0, le=500)
    maker_fee_pct: float = Field(0.02, ge=0, le=1)  # paper limit fills (Bybit's default maker fee)
    # replay: a research bot of `replay`/`demo` (its rows are the desk's to show, never a bot the host trades)
    mode: BotMode = "paper"
    extra: dict[str, Any] = Field(default_factory=dict)
    _unloaded: dict[str, UnloadedStrategy] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _symbols_as_rule(cls, data: Any) -> Any:
        """`symbols: {top: 20, exclude: [...]}` in a file is the rule written where the list would be."""
        if isinstance(data, dict) and isinstance(data.get("symbols"), dict):
            if data.get("universe") is not None:
                raise ValueError("symbols is a rule and universe is set too: write the rule once")
            data = {**data, "universe": data["symbols"], "symbols": []}
        if isinstance(data, dict) and data.get("universe") is not None and "symbols" not in data:
            data = {**data, "symbols": []}  # the rule chooses them; without either, `symbols` is missing
        return data

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        return symbol_list(value)

    @field_validator("slow_interval", "fast_interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> str:
        return parse_interval(str(value))

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategies(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        # the name is in ctx so a file loader can point at strategies.<name>
        unknown = [str(k) for k in value if STRATEGIES.get(str(k)) is None]
        if unknown:
            raise PydanticCustomError("unknown_strategy", "unknown strategy '{name}' (known: {known})",
                                      {"name": unknown[0], "known": ", ".join(STRATEGIES.names())})
        shape = _shape(tuple((name, STRATEGIES.get(name).params) for name in value))  # type: ignore[union-attr]
        return dict(zip(value, dict(shape.model_validate(value)).values(), strict=True))

    @model_validator(mode="wrap")
    @classmethod
    def _stored(cls, data: Any, handler: ModelWrapValidatorHandler[BotConfig], info: ValidationInfo) -> BotConfig:
        """Read from the database (context {"stored": True}): a strategy this process cannot run is set
        aside, not an error: the bot runs without it and tells the operator (core.engine)."""
        stored = isinstance(info.context, dict) and info.context.get("stored")
        if not stored or not isinstance(data, dict) or not isinstance(data.get("strategies"), dict):
            return handler(data)
        usable, unloaded = _stored_split(data["strategies"])
        config = handler({**data, "strategies": usable})
        config._unloaded = unloaded
        return config

    @model_validator(mode="after")
    def _coherent(self) -> BotConfig:
        if INTERVAL_MS[self.fast_interval] >= INTERVAL_MS[self.slow_interval]:
            raise ValueError("fast_interval must be shorter than slow_interval")
        if INTERVAL_MS[self.slow_interval] % INTERVAL_MS[self.fast_interval]:
            raise ValueError("slow_interval must be a whole multiple of fast_interval")
        if not self.symbols and self.universe is None:
            raise ValueError("list symbols, or give a universe rule (e.g. universe: {top: 20})")
        if self.symbols and self.universe is not None:
            raise ValueError("symbols and universe both set: the universe rule's include list takes fixed symbols")
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

    @property
    def unloaded(self) -> dict[str, UnloadedStrategy]:
        return self._unloaded

    def strategy_settings(self) -> dict[str, dict[str, Any]]:
        """Every strategy's parameters as stored: those this process could not load, as they were."""
        return {**{k: dict(u.params) for k, u in self._unloaded.items()},
                **{k: v.model_dump() for k, v in self.strategies.items()}}
