"""The one place strategy names resolve: name → class, parameter model, role, where it came from, and the
version its signals carry.

The built-ins register here when core.strategies is imported; user strategies (a folder, an entry point)
are imported by bot/ at the start of a command and registered the same way. core/ never looks for them.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from core.strategies.params import StrategyParams, first_error

if TYPE_CHECKING:
    from core.strategies.base import Role, Strategy

BUILTIN = "builtin"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # signals.strategy holds 32 characters
ROLES = ("slow", "fast")


class StrategyRefused(Exception):
    """A class that is not a usable strategy, or whose name is taken; the message says why."""


@dataclass(frozen=True, slots=True)
class StrategySpec:
    name: str
    cls: Callable[[StrategyParams], Strategy]
    params: type[StrategyParams]
    role: Role
    source: str  # "builtin", the file it was loaded from, or "entry point NAME = module:attr"
    version: str  # 12 hex of the sha256 of its module's source: part of every signal id

    def build(self, params: StrategyParams) -> Strategy:
        return self.cls(params)


def source_version(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def module_version(cls: type) -> str:
    """The version of a strategy: its module's source, hashed (a change anywhere in the file is a new version)."""
    module = sys.modules.get(cls.__module__)
    try:
        if module is None:
            raise OSError("its module is not imported")
        return source_version(inspect.getsource(module))
    except (OSError, TypeError) as exc:
        raise StrategyRefused(f"no source to version it by ({exc})") from None


def _method(cls: type, name: str, arity: int) -> None:
    member = inspect.getattr_static(cls, name, None)
    if not inspect.isfunction(member):
        raise StrategyRefused(f"no {name}() method")
    try:
        inspect.signature(member).bind(*([None] * (arity + 1)))  # self + the protocol's arguments
    except TypeError:
        raise StrategyRefused(f"{name}() must take {arity} arguments besides self") from None


def check_class(cls: object) -> tuple[str, Role, type[StrategyParams]]:
    """The protocol, checked explicitly: a name, a role, a parameter model whose defaults validate, a
    constructor taking the parameters, propose(series, context) and allowed(regime, side)."""
    if not isinstance(cls, type):
        raise StrategyRefused(f"{cls!r} is not a class")
    name = inspect.getattr_static(cls, "name", None)
    if not isinstance(name, str) or not NAME.match(name):
        raise StrategyRefused(f"name {name!r}: a strategy's name is 1-32 lowercase letters, digits and _, "
                              "starting with a letter")
    role = inspect.getattr_static(cls, "role", None)
    if role not in ROLES:
        raise StrategyRefused(f"role {role!r}: must be one of {', '.join(ROLES)}")
    params = inspect.getattr_static(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, StrategyParams)):
        raise StrategyRefused("Params must be a pydantic model subclassing core.strategies.StrategyParams")
    try:
        defaults = params()
    except ValidationError as exc:
        raise StrategyRefused(f"its parameter defaults do not validate: {first_error(exc)}") from None
    try:
        inspect.signature(cls).bind(defaults)
    except (TypeError, ValueError):
        raise StrategyRefused("its constructor must take the parameters: __init__(self, params)") from None
    _method(cls, "propose", 2)
    _method(cls, "allowed", 2)
    return name, role, params


class Registry:
    def __init__(self) -> None:
        self._specs: dict[str, StrategySpec] = {}

    def register(self, cls: object, source: str, version: str | None = None) -> StrategySpec:
        """Check `cls` and register it under its name; StrategyRefused says why not. The same source again
        is a no-op (or, changed, its new version); a name taken by another source, a built-in above all,
        is refused: nothing replaces a strategy silently."""
        name, role, params = check_class(cls)
        assert isinstance(cls, type)
        version = version or module_version(cls)
        taken = self._specs.get(name)
        if taken is not None and taken.source == source and taken.version == version:
            return taken
        if taken is not None and taken.source != source:
            raise StrategyRefused(f"the name {name!r} is taken by "
                                  f"{'a built-in strategy' if taken.source == BUILTIN else taken.source}")
        spec = self._specs[name] = StrategySpec(name, cls, params, role, source, version)
        return spec

    def remove(self, name: str) -> None:
        """Forget a user strategy (tests; a built-in stays)."""
        if name in self._specs and self._specs[name].source != BUILTIN:
            del self._specs[name]

    def get(self, name: str) -> StrategySpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return [s.name for s in self.specs()]

    def specs(self) -> list[StrategySpec]:
        """The built-ins in their order, then user strategies by name."""
        builtins = [s for s in self._specs.values() if s.source == BUILTIN]
        return builtins + sorted((s for s in self._specs.values() if s.source != BUILTIN), key=lambda s: s.name)


STRATEGIES = Registry()
