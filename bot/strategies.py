"""User strategies: imported at the start of every command that builds engines or validates bots, and
registered in core's registry (core.strategies.STRATEGIES) the way the built-ins are.

Two sources: the *.py files of STRATEGIES_DIR (default ./strategies; names starting with _ are helpers,
not loaded) and the `phantomdesk.strategies` entry-point group of installed packages. A file that does
not import, or a class that is not a strategy, is refused with one log line naming the file and why;
nothing here stops the desk. A name already taken (a built-in above all) is refused too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from bot.settings import Settings
from core.strategies import STRATEGIES, StrategyRefused, StrategySpec
from core.strategies.registry import source_version

log = logging.getLogger("phantomdesk.strategies")

ENTRY_POINT_GROUP = "phantomdesk.strategies"


@dataclass(frozen=True, slots=True)
class Refusal:
    where: str  # the file (and class), or the entry point
    why: str

    def __str__(self) -> str:
        return f"{self.where}: {self.why}"


@dataclass
class Loaded:
    strategies: list[StrategySpec] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    def add(self, other: Loaded) -> None:
        self.strategies += other.strategies
        self.refused += other.refused


def load_strategies(settings: Settings) -> Loaded:
    """Every user strategy of this process: STRATEGIES_DIR's files, then the entry points."""
    loaded = Loaded()
    if (folder := settings.strategies_path) is not None:
        for path in strategy_files(folder):
            loaded.add(load_file(path))
    loaded.add(load_entry_points())
    for refusal in loaded.refused:
        log.warning("strategy refused: %s", refusal)
    for spec in loaded.strategies:
        log.debug("strategy %s (version %s) from %s", spec.name, spec.version, spec.source)
    return loaded


def strategy_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def _problem(exc: BaseException, filename: str) -> str:
    """`Type: message (line N)`: the line of the user's file where it went wrong, when there is one."""
    line = exc.lineno if isinstance(exc, SyntaxError) else next(
        (f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__)) if f.filename == filename), None)
    message = exc.msg if isinstance(exc, SyntaxError) else str(exc)  # str() of a SyntaxError repeats the line
    text = message.strip().splitlines()[0] if message.strip() else ""
    return f"{type(exc).__name__}{': ' + text[:200] if text else ''}{f' (line {line})' if line else ''}"


def _import(path: Path, source: str) -> ModuleType:
    """The file as a module of its own (registered in sys.modules: dataclasses and pydantic need it). The
    text hashed for the version is the text executed."""
    name = f"phantomdesk_user_{path.stem}_{hashlib.sha256(source.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_file(path: Path) -> Loaded:
    """The strategies of one file: each class defined in it with propose() or allowed(), registered."""
    out = Loaded()
    path = path.resolve()
    where = str(path)
    try:
        source = path.read_text(encoding="utf-8")
        module = _import(path, source)
    except (Exception, SystemExit) as exc:  # its top level is user code: whatever it raises, it is refused
        out.refused.append(Refusal(where, f"cannot import it: {_problem(exc, where)}"))
        return out
    classes = [obj for obj in vars(module).values() if isinstance(obj, type) and obj.__module__ == module.__name__
               and any(inspect.getattr_static(obj, m, None) is not None for m in ("propose", "allowed"))]
    if not classes:
        out.refused.append(Refusal(where, "no strategy in it (a class with propose() and allowed())"))
    version = source_version(source)
    for cls in classes:
        try:
            out.strategies.append(STRATEGIES.register(cls, where, version))
        except StrategyRefused as exc:
            out.refused.append(Refusal(f"{where}: class {cls.__name__}", str(exc)))
    return out


def load_entry_points() -> Loaded:
    """Strategies of installed packages: `[project.entry-points."phantomdesk.strategies"] name = "pkg.mod:Class"`."""
    out = Loaded()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        where = f"entry point {ep.name} = {ep.value}" + (f" ({ep.dist.name})" if ep.dist is not None else "")
        try:
            cls = ep.load()
        except (Exception, SystemExit) as exc:
            out.refused.append(Refusal(where, f"cannot import it: {type(exc).__name__}: {exc}"))
            continue
        try:
            out.strategies.append(STRATEGIES.register(cls, where))
        except StrategyRefused as exc:
            out.refused.append(Refusal(where, str(exc)))
    return out
