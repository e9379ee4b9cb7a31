"""`python -m bot strategies list|new|check`: the strategies this desk can run, and your own.

    python -m bot strategies list [--json]          # name, source, role, version, parameters
    python -m bot strategies new my_breakout        # a working, commented strategy in STRATEGIES_DIR
    python -m bot strategies check strategies/my_breakout.py   # or a name: signals, then look-ahead

User strategies are loaded before any of these (bot/strategies.py); a refused file is one log line.
`check` exits 1 when the strategy fails, raises, or sees the future (core/strategies/check.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bot.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, SettingsFn, positive, run_command
from bot.settings import DEFAULT_STRATEGIES_DIR


def register(subparsers: Any, settings: SettingsFn) -> None:
    """Add `strategies ...` to the `python -m bot` parser; `settings` loads the user strategies."""
    strategies = subparsers.add_parser("strategies", help="strategies: list them, write your own, check one")
    sub = strategies.add_subparsers(dest="strategies_command", required=True, metavar="{list,new,check}")

    ls = sub.add_parser("list", help="every strategy: name, source, role, version, parameters with bounds")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=lambda args: run_command(lambda: _list(args, settings)))

    new = sub.add_parser("new", help="write a commented strategy template that replays as it is")
    new.add_argument("name", help="lowercase letters, digits and _ (it goes into every signal)")
    new.add_argument("--dir", type=Path, help=f"where (default: STRATEGIES_DIR, else ./{DEFAULT_STRATEGIES_DIR})")
    new.set_defaults(func=lambda args: run_command(lambda: _new(args, settings)))

    check = sub.add_parser("check", help="run one strategy over a synthetic market; look for look-ahead",
                           description="Loads the strategy, validates its default parameters, runs it through "
                                       "the engine over a seeded synthetic market, counts its signals per "
                                       "side, then re-runs the market cut right after each signal: the "
                                       "proposal at that candle must not change. Exit 1 if it does.")
    check.add_argument("strategy", help="a .py file, or the name of a loaded strategy")
    check.add_argument("--days", type=positive(float, "a number of days"), default=7,
                       help="days of synthetic market (default 7)")
    check.add_argument("--seed", type=int, default=7)
    check.add_argument("--max-cuts", type=positive(int, "a whole number"), default=100,
                       help="re-run at most this many signals, evenly spread (default 100; each is a whole run)")
    check.set_defaults(func=lambda args: run_command(lambda: _check(args, settings)))


def _list(args: argparse.Namespace, settings: SettingsFn) -> int:
    settings()
    from core.strategies import STRATEGIES
    from core.strategies.params import describe

    specs = STRATEGIES.specs()
    if args.json:
        print(json.dumps([{"name": s.name, "source": s.source, "role": s.role, "version": s.version,
                           "params": [{"name": p.name, "type": p.type, "default": p.default, "bounds": p.bounds,
                                       "description": p.description} for p in describe(s.params)]}
                          for s in specs], indent=2))
        return EXIT_OK
    for n, spec in enumerate(specs):
        print(("\n" if n else "") + f"{spec.name}  ({spec.role}, {spec.source}, version {spec.version})")
        params = describe(spec.params)
        width = max(len(p.name) for p in params)
        for p in params:
            default = json.dumps(p.default)
            print(f"  {p.name.ljust(width)}  {default:>6}  {p.bounds or '-':<14}  {p.description}".rstrip())
    return EXIT_OK


def _new(args: argparse.Namespace, settings_fn: SettingsFn) -> int:
    settings = settings_fn()
    from bot.strategy_template import render
    from core.strategies import STRATEGIES
    from core.strategies.registry import NAME

    name = args.name
    if not NAME.match(name):
        raise CliError(f"{name!r}: a strategy's name is 1-32 lowercase letters, digits and _, starting with a "
                       "letter", EXIT_USAGE)
    if (taken := STRATEGIES.get(name)) is not None:
        raise CliError(f"{name!r} is taken by {'a built-in strategy' if taken.source == 'builtin' else taken.source}")
    folder = args.dir or settings.strategies_dir or Path(DEFAULT_STRATEGIES_DIR)
    path = folder / f"{name}.py"
    if path.exists():
        raise CliError(f"{path} exists already (nothing was written)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as f:
            f.write(render(name, str(path), str(folder)))
    except OSError as exc:
        raise CliError(f"{path}: cannot write it: {exc}") from None
    print(f"wrote {path}")
    print(f"check it:   python -m bot strategies check {path}")
    loaded = settings.strategies_path is not None and folder.resolve() == settings.strategies_path.resolve()
    print(f"replay it:  {'' if loaded else f'STRATEGIES_DIR={folder} '}python -m bot replay --data <candle folder> "
          f"--strategies {name}")
    return EXIT_OK


def _check(args: argparse.Namespace, settings: SettingsFn) -> int:
    settings()
    from bot.strategies import load_file
    from core.strategies import STRATEGIES
    from core.strategies.check import check_strategy

    target = Path(args.strategy)
    if target.suffix == ".py" or target.exists():
        if not target.is_file():
            raise CliError(f"{target}: no such file")
        loaded = load_file(target)
        if loaded.refused:
            raise CliError("; ".join(str(r) for r in loaded.refused))
        specs = loaded.strategies
    else:
        spec = STRATEGIES.get(args.strategy)
        if spec is None:
            raise CliError(f"unknown strategy {args.strategy!r} (known: {', '.join(STRATEGIES.names())}; or give "
                           "a .py file)")
        specs = [spec]
    worst = EXIT_OK
    for spec in specs:
        report = check_strategy(spec, days=args.days, seed=args.seed, max_cuts=max(2, args.max_cuts))
        print(f"{spec.name} ({spec.role}, version {spec.version}, {spec.source})")
        print(f"  market: synthetic, seed {args.seed}, {args.days:g} days, {report.candles} candles")
        long, short = report.signals["long"], report.signals["short"]
        print(f"  signals: {long + short} (long {long}, short {short})")
        if report.failed is not None:
            print(f"  FAILED: {report.failed}")
        elif report.look_ahead:
            print(f"  LOOK-AHEAD: {len(report.look_ahead)} of {report.cuts} signals re-run change when the market is "
                  "cut right after their candle:")
            for finding in report.look_ahead[:10]:
                print(f"    {finding}")
            if len(report.look_ahead) > 10:
                print(f"    ... and {len(report.look_ahead) - 10} more")
        elif long + short:
            print(f"  look-ahead: none ({report.cuts} of {long + short} signals re-run on the market cut right after "
                  "their candle)")
        else:
            print("  look-ahead: not tested (no signal on this market: try --days or --seed)")
        worst = worst if report.ok else EXIT_FAILURE
    return worst
