"""Strategy parameters: what the engine reads of every strategy, and the shared pieces a model reuses.

Each strategy has its own pydantic model subclassing StrategyParams (every field with a default, bounds
and a description); a bot's configuration is validated against it, field by field. The Annotated types
below carry the bounds and the description, so a model that only changes a default writes
`reward_risk: RewardRisk = 1.5` and keeps the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import annotated_types as at
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CooldownCandles = Annotated[int, Field(ge=0, le=1000, description="candles after a signal before the next one on "
                                                                  "the same symbol")]
AdxTrend = Annotated[float, Field(ge=5, le=80, description="ADX at or above: trending (regime gate)")]
AdxRange = Annotated[float, Field(ge=5, le=80, description="ADX at or below: ranging (regime gate)")]
MaxAtrPercentile = Annotated[float, Field(gt=0, le=1, description="ATR percentile above which the market is in a "
                                                                  "volatility burst (regime gate)")]
RewardRisk = Annotated[float, Field(gt=0.2, le=10, description="take-profit distance / stop distance")]
MinStopAtr = Annotated[float, Field(gt=0, le=10, description="nearest stop, in ATR")]
MaxStopAtr = Annotated[float, Field(gt=0, le=20, description="farthest stop, in ATR")]
RsiLevel = Annotated[float, Field(ge=1, le=99, description="RSI level")]


@dataclass(frozen=True, slots=True)
class Search:
    """How `optimize` searches one parameter: a range inside its declared bounds (never beyond them: a range
    that leaves them is refused), a grid step, a log scale, a subset of a Literal's choices, or `off`
    (not searched: it keeps its value)."""

    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    off: bool = False


OFF = Search(off=True)


class StrategyParams(BaseModel):
    """The fields the engine itself reads: on/off, the cooldown, and the regime gate's thresholds (the
    regime handed to `allowed` is computed with them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # what `optimize` searches (core/optimize/space.py): every bounded field within its bounds, narrowed here
    # to the ranges worth a trial; a subclass adds to or replaces its parent's entries ({**Parent.search_space})
    search_space: ClassVar[dict[str, Search]] = {
        "cooldown_candles": Search(0, 24),
        "adx_trend": Search(15, 40, step=1),
        "adx_range": Search(12, 30, step=1),
        "max_atr_percentile": Search(0.7, 1.0, step=0.01),
    }

    enabled: Annotated[bool, Field(description="run this strategy")] = True
    cooldown_candles: CooldownCandles = 4
    adx_trend: AdxTrend = 25.0
    adx_range: AdxRange = 20.0
    max_atr_percentile: MaxAtrPercentile = 0.9


class StopParams(StrategyParams):
    """For strategies that place their stop with core.strategies.base.bounded_stop."""

    min_stop_atr: MinStopAtr = 0.8
    max_stop_atr: MaxStopAtr = 3.0
    # disjoint ranges: every sampled pair keeps min below max
    search_space: ClassVar[dict[str, Search]] = {
        **StrategyParams.search_space,
        "min_stop_atr": Search(0.3, 1.4, step=0.05),
        "max_stop_atr": Search(1.5, 5.0, step=0.1),
    }

    @model_validator(mode="after")
    def _stop_bounds(self) -> StopParams:
        below(self.min_stop_atr, self.max_stop_atr, "min_stop_atr", "max_stop_atr")
        return self


def below(low: float, high: float, low_name: str, high_name: str) -> None:
    """A model rule: `low_name` must stay under `high_name` (raised as a pydantic value error)."""
    if low >= high:
        raise ValueError(f"{low_name} must be below {high_name}")


def first_error(exc: ValidationError) -> str:
    """`field: message` of a validation's first problem, for one-line refusals."""
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where + ': ' if where else ''}{str(err['msg']).removeprefix('Value error, ')}"


@dataclass(frozen=True, slots=True)
class ParamInfo:
    """One parameter as `strategies list` shows it."""

    name: str
    type: str
    default: Any
    bounds: str  # like ">0.2, <=10"; empty when unbounded
    description: str


def _bound(m: object) -> str | None:
    if isinstance(m, at.Gt):
        return f">{m.gt}"
    if isinstance(m, at.Ge):
        return f">={m.ge}"
    if isinstance(m, at.Lt):
        return f"<{m.lt}"
    if isinstance(m, at.Le):
        return f"<={m.le}"
    return None


def describe(model: type[StrategyParams]) -> list[ParamInfo]:
    out = []
    for name, info in model.model_fields.items():
        limits = [b for m in info.metadata if (b := _bound(m)) is not None]
        kind = info.annotation.__name__ if isinstance(info.annotation, type) else str(info.annotation)
        out.append(ParamInfo(name, kind, info.default, ", ".join(limits), info.description or ""))
    return out
