"""Arguments of `python -m bot optimize` (a parameter search, bot/optimize.py) and `optimize apply` (a trial's
values into a bot, bot/optimize_apply.py). The implementations are imported only when one of them runs:
they pull in Optuna and scikit-learn, which every other command can do without.

    python -m bot optimize --data DIR --strategy scalp --trials 200 [--workers 2] [--search risk_pct]
    python -m bot optimize apply STUDY --trial 17 --bot main [--yes]
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.cli_replay import add_market_args
from bot.settings import Settings

OBJECTIVES = ("expectancy", "profit_factor", "sharpe", "calmar")


def register(subparsers: Any, settings: Callable[[], Settings]) -> None:
    op = subparsers.add_parser(
        "optimize", help="search a strategy's parameters with Optuna, walk-forward (in-sample chooses, "
                         "out-of-sample is reported); `optimize apply` writes a trial's values into a bot",
        description="A study per strategy, data and windows: running the same command again continues it. "
                    "Each trial replays the in-sample windows through the replay's engine in memory; the best "
                    "trials' out-of-sample figures are computed when it stops.")
    op.add_argument("--data", type=Path, help="folder (or file) of candle CSV/Parquet files")
    add_market_args(op)
    op.add_argument("--funding", type=Path, help="folder of funding-rate files (default: the --data folder)")
    op.add_argument("--strategy", help="the strategy whose parameters are searched (yours included)")
    op.add_argument("--search", type=_names, default=[], metavar="SETTING,..",
                    help="bot settings to search too, within their bounds (risk_pct, min_reward_r, "
                         "trailing_stop_pct, ml_threshold with --ml, ...)")
    op.add_argument("--trials", type=_positive, default=100, help="the study's size: stop once it holds this "
                                                                   "many finished trials (default 100)")
    op.add_argument("--workers", type=_positive, default=1, help="trial processes on this machine (default 1)")
    op.add_argument("--study", help="study name (default: derived from the strategy, its version, the data, "
                                    "the windows and the objective)")
    op.add_argument("--storage", help="a postgresql:// URL (studies shared by every machine that names them) or "
                                      "a journal file (default: DATA_DIR/optimize/STUDY.journal)")
    op.add_argument("--objective", choices=OBJECTIVES, default="expectancy",
                    help="what a trial maximizes over its in-sample windows (default: expectancy in R after fees "
                         "and funding)")
    op.add_argument("--min-trades", type=_positive, default=20,
                    help="in-sample closed trades below which a trial fails (default 20)")
    op.add_argument("--windows", type=_positive, default=4, help="walk-forward folds (default 4)")
    op.add_argument("--oos-fraction", type=_fraction, default=0.25,
                    help="the out-of-sample share of each fold (default 0.25)")
    op.add_argument("--scheme", choices=("rolling", "anchored"), default="rolling",
                    help="rolling: folds one after the other, each in-sample then out-of-sample (default); "
                         "anchored: all in-sample from the start, then the most recent stretch out-of-sample")
    op.add_argument("--seed", type=int, default=7, help="sampler seed: one worker, the same seed, the same study")
    op.add_argument("--ml", action="store_true", help="with the ML filter (it trains inline: much slower)")
    op.add_argument("--top", type=_positive, default=5, help="top trials shown with their out-of-sample figures")
    op.add_argument("--out", type=Path, help="also write results.md, trials.csv and optimize.png here")
    op.add_argument("--json", action="store_true", help="end stdout with one JSON document (no progress bar)")
    sub = op.add_subparsers(dest="optimize_command", metavar="{apply}")
    ap = sub.add_parser("apply", help="write a finished trial's values into a bot (shown as a diff first)")
    ap.add_argument("study", help="the study's name (printed by `optimize`)")
    ap.add_argument("--trial", type=int, required=True, help="the trial's number")
    ap.add_argument("--bot", required=True, help="the bot to change")
    ap.add_argument("--storage", dest="apply_storage", help="where the study is (default: its journal under "
                                                            "DATA_DIR/optimize)")
    ap.add_argument("--db", help="database URL (default: DATABASE_URL)")
    ap.add_argument("--yes", action="store_true", help="apply without asking")
    op.set_defaults(func=lambda args: _run(op, args, settings))


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Callable[[], Settings]) -> int:
    if args.optimize_command is None:
        missing = [flag for flag, value in (("--data", args.data), ("--strategy", args.strategy)) if value is None]
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)}")
    return int(importlib.import_module("bot.optimize").command(args, settings))


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1")
    return value
