"""The search space of a study: the strategy's own parameter model (its declared bounds, narrowed by its
`search_space`) and, when named, the bot settings of SETTINGS (risk and filters) within BotConfig's bounds.

A dimension's range is always inside the field's declared bounds: a narrowing that leaves them is refused
here, before any trial, so no trial can ever be handed a value its model would refuse for its bounds.
(Rules between fields, like min_stop_atr below max_stop_atr, are the model's: a sampled combination that
breaks one is a failed trial, said why.)
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Protocol, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from core.config import BotConfig
from core.strategies.params import Search, StrategyParams

BOT_PREFIX = "bot."  # a bot setting's name in a study (strategy parameters keep theirs)

# The bot settings a study may search (--search), each narrowed to where a trial is worth its time; all
# inside BotConfig's bounds (checked like a strategy's). Fees, slippage, capital and the like are not
# settings to fit: searching them would only find the cheapest market.
SETTINGS: dict[str, Search] = {
    "risk_pct": Search(0.25, 3.0, step=0.05),
    "max_leverage": Search(1, 20, step=1),
    "max_positions": Search(1, 10),
    "trailing_stop_pct": Search(0.2, 5.0, step=0.05),
    "breakeven_at_r": Search(0.5, 3.0, step=0.1),
    "drawdown_guard_pct": Search(5, 50, step=1),
    "daily_loss_limit_pct": Search(1, 20, step=0.5),
    "win_rate_floor": Search(0.0, 0.5, step=0.01),
    "breaker_min_outcomes": Search(10, 200),
    "loss_cooldown_minutes": Search(0, 1440, step=15),
    "phantom_timeout_candles": Search(12, 288),
    "min_level_ticks": Search(1, 20),
    "min_reward_r": Search(0.0, 2.0, step=0.05),
    "ml_threshold": Search(-0.2, 1.0, step=0.01),
    "ml_min_p": Search(0.0, 0.8, step=0.01),
}
ML_SETTINGS = ("ml_threshold", "ml_min_p")  # they act only through the ML filter

Kind = Literal["int", "float", "bool", "choice"]


class SpaceError(ValueError):
    """A search space that cannot be built: the message names the field and why."""


class Suggester(Protocol):
    """What a dimension asks of a trial (optuna.Trial is one)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str  # the field's name; a bot setting's is prefixed with BOT_PREFIX
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    decimal: bool = False  # the field holds a Decimal: the sampled float is turned into one

    @property
    def field(self) -> str:
        return self.name.removeprefix(BOT_PREFIX)

    @property
    def is_setting(self) -> bool:
        return self.name.startswith(BOT_PREFIX)

    def suggest(self, trial: Suggester) -> Any:
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.kind == "float":
            value = trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
            if self.step is not None:  # low + k·step in floats: 0.30000000000000004 -> 0.3, still on the grid
                value = min(max(round(value, _decimals(self.step)), self.low), self.high)
            return Decimal(repr(value)) if self.decimal else value
        return trial.suggest_categorical(self.name, list(self.choices))

    def describe(self) -> str:
        if self.kind in ("bool", "choice"):
            return f"{self.name} in {{{', '.join(map(str, self.choices))}}}"
        grid = f" step {self.step:g}" if self.step else ""
        return f"{self.name} {self.low:g}..{self.high:g}{grid}{' log' if self.log else ''}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One trial's values: the strategy's parameters and the bot settings."""

    params: dict[str, Any]
    settings: dict[str, Any]

    def config(self, base: BotConfig, strategy: str) -> BotConfig:
        """`base` with these values, validated by BotConfig (pydantic's ValidationError when a rule between
        fields is broken)."""
        current = base.strategies[strategy].model_dump() if strategy in base.strategies else {}
        doc = base.model_dump()
        doc.update(self.settings)
        doc["strategies"] = {**base.strategy_settings(), strategy: {**current, **self.params, "enabled": True}}
        return BotConfig.model_validate(doc)

    def as_json(self) -> dict[str, dict[str, Any]]:
        """As a study stores it (a Decimal as its text: read back exactly)."""
        return {"params": dict(self.params),
                "settings": {k: str(v) if isinstance(v, Decimal) else v for k, v in self.settings.items()}}

    @classmethod
    def from_json(cls, doc: dict[str, dict[str, Any]]) -> Candidate:
        return cls(dict(doc["params"]), dict(doc["settings"]))  # BotConfig reads a Decimal's text back exactly


@dataclass(frozen=True, slots=True)
class Space:
    dimensions: tuple[Dimension, ...]
    fixed: dict[str, str]  # field -> why it is not searched

    def suggest(self, trial: Suggester) -> Candidate:
        params: dict[str, Any] = {}
        settings: dict[str, Any] = {}
        for d in self.dimensions:
            (settings if d.is_setting else params)[d.field] = d.suggest(trial)
        return Candidate(params, settings)


def space_of(params: type[StrategyParams], settings: Sequence[str] = (), *, ml: bool = False) -> Space:
    """The study's space: every bounded field of `params` but `enabled` (narrowed by its search_space; a field
    without bounds nor a narrowing is left at its value, and said why), then the named bot settings."""
    dims: list[Dimension] = []
    fixed: dict[str, str] = {}
    for name, info in params.model_fields.items():
        if name == "enabled":
            continue
        narrow = params.search_space.get(name, Search())
        if narrow.off:
            fixed[name] = "off in its search_space"
            continue
        dim = _dimension(name, info, narrow, params)
        if dim is None:
            fixed[name] = "no bounds to search within (declare ge/le, or narrow it in search_space)"
            continue
        dims.append(dim)
    if unknown := [s for s in params.search_space if s not in params.model_fields]:
        raise SpaceError(f"{params.__name__}.search_space names {unknown[0]!r}, which is not one of its fields")
    for name in settings:
        if name not in SETTINGS:
            raise SpaceError(f"--search: {name!r} is not a searchable bot setting (searchable: {', '.join(SETTINGS)})")
        if name in ML_SETTINGS and not ml:
            raise SpaceError(f"--search: {name} acts only through the ML filter: add --ml")
        dim = _dimension(name, BotConfig.model_fields[name], SETTINGS[name], BotConfig)
        assert dim is not None  # every SETTINGS entry has a range
        dims.append(Dimension(BOT_PREFIX + name, dim.kind, dim.low, dim.high, dim.step, dim.log, dim.choices,
                              dim.decimal))
    if not dims:
        raise SpaceError(f"{params.__name__}: nothing to search (every field is fixed: "
                         f"{'; '.join(f'{k}: {v}' for k, v in fixed.items()) or 'no fields'})")
    return Space(tuple(dims), fixed)


def _decimals(step: float) -> int:
    return max(0, -int(Decimal(repr(step)).normalize().as_tuple().exponent))


def _scalar(annotation: Any) -> Any:
    """X of `X | None` (None is never sampled: a trial always gives a value)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _bounds(info: FieldInfo, kind: Kind) -> tuple[float | None, float | None]:
    """The closed range of a field's declared bounds (an open bound is moved to the nearest value inside)."""
    low: float | None = None
    high: float | None = None
    for m in info.metadata:
        if isinstance(m, at.Ge):
            low = float(m.ge)  # type: ignore[arg-type]
        elif isinstance(m, at.Gt):
            low = float(m.gt) + 1 if kind == "int" else math.nextafter(float(m.gt), math.inf)  # type: ignore[arg-type]
        elif isinstance(m, at.Le):
            high = float(m.le)  # type: ignore[arg-type]
        elif isinstance(m, at.Lt):
            high = float(m.lt) - 1 if kind == "int" else math.nextafter(float(m.lt), -math.inf)  # type: ignore[arg-type]
    return low, high


def _dimension(name: str, info: FieldInfo, narrow: Search, model: type[BaseModel]) -> Dimension | None:
    where = f"{model.__name__}.{name}"
    tp = _scalar(info.annotation)
    if get_origin(tp) is Literal or tp is bool:
        declared = tuple(get_args(tp)) if tp is not bool else (False, True)
        choices = narrow.choices if narrow.choices is not None else declared
        if not choices or any(c not in declared for c in choices):
            raise SpaceError(f"{where}: search choices {list(choices)} are not among its declared {list(declared)}")
        return Dimension(name, "bool" if tp is bool else "choice", choices=tuple(choices))
    if tp not in (int, float, Decimal):
        return None
    kind: Kind = "int" if tp is int else "float"
    low, high = _bounds(info, kind)
    lo = narrow.low if narrow.low is not None else low
    hi = narrow.high if narrow.high is not None else high
    if lo is None or hi is None:
        return None
    if (low is not None and lo < low) or (high is not None and hi > high) or lo > hi:
        raise SpaceError(f"{where}: search range {lo:g}..{hi:g} leaves its declared bounds "
                         f"{'-inf' if low is None else f'{low:g}'}..{'inf' if high is None else f'{high:g}'}")
    if narrow.step is not None and (narrow.step <= 0 or (kind == "int" and narrow.step != int(narrow.step))):
        whole = " and whole" if kind == "int" else ""
        raise SpaceError(f"{where}: search step {narrow.step:g} must be positive{whole}")
    if narrow.log and (lo <= 0 or narrow.step is not None):
        raise SpaceError(f"{where}: a log scale needs a range above 0 and no step")
    if kind == "int":
        lo, hi = math.ceil(lo), math.floor(hi)
    return Dimension(name, kind, lo, hi, narrow.step, narrow.log, decimal=tp is Decimal)
