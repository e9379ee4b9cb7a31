"""Arguments of `python -m bot replay` and `python -m bot demo`. The implementation (bot/replay.py) is
imported only when one of them runs: it pulls in scikit-learn, which every other command can do without."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from bot.cli import interval_pair, positive
from bot.settings import Settings


def _impl() -> ModuleType:
    return importlib.import_module("bot.replay")


def register(subparsers: Any, settings: Callable[[], Settings]) -> None:
    rp = subparsers.add_parser("replay", help="run the full engine over candle files (paper broker)")
    rp.add_argument("--data", type=Path, required=True, help="folder (or file) of candle CSV/Parquet files")
    add_market_args(rp)
    rp.add_argument("--db", help="database URL (default: DATABASE_URL)")
    rp.add_argument("--bot", default="replay", help="bot id the replay records under (default: replay)")
    rp.add_argument("--fresh", action="store_true", help="forget an earlier replay of this bot and start over")
    rp.add_argument("--flush-every", type=positive(int, "a whole number of candles"), default=5000,
                    help="candles per database batch")
    rp.add_argument("--json", action="store_true", help="end stdout with one JSON summary line")
    rp.add_argument("--no-ml", dest="ml", action="store_false", help="replay without the ML filter")
    add_ml_gate_arg(rp)
    rp.add_argument("--funding", type=Path, help="folder of funding-rate files (default: the --data folder; "
                                                 "storage/funding_files.py says the format)")
    rp.add_argument("--universe", metavar="RULE", help="the symbols as a rule over the files, as JSON: e.g. "
                    "'{\"top\": 20, \"exclude\": [\"BTCUSDT\"]}' (core/universe.py: top, min_turnover_usd, "
                    "min_age_days, include, exclude); 24 h turnover from the files at the replay's market time")
    rp.add_argument("--universe-refresh", type=positive(float, "a number of hours"), default=1.0, metavar="HOURS",
                    help="with --universe: market hours between two selections (default 1)")
    add_report_args(rp)
    add_strategies_arg(rp)
    rp.set_defaults(func=lambda args: _impl().files(args, settings))

    demo = subparsers.add_parser("demo", help="replay the built-in synthetic market and print the report")
    demo.add_argument("--days", type=positive(float, "a number of days"), default=30,
                      help="days of synthetic market (default 30)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--db", help="database URL (default: DATABASE_URL)")
    demo.add_argument("--json", action="store_true")
    demo.add_argument("--no-ml", dest="ml", action="store_false", help="without the ML filter")
    add_ml_gate_arg(demo)
    add_report_args(demo)
    add_strategies_arg(demo)
    demo.set_defaults(func=lambda args: _impl().synthetic(args, settings), bot="demo", fresh=True,
                      flush_every=5000, intervals=("15", "5"), data=None, funding=None, universe=None)


def add_ml_gate_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ml-gate", choices=("evidence", "always"), default="evidence",
                        help="evidence (default): a model scores only once its out-of-sample advantage is unlikely to "
                             "be noise; always: every trained model takes effect (research, tests: the report says so)")


def add_report_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="also write the report (report.md), the closed trades (trades.csv) "
                                                 "and the equity curve with its drawdown (equity.png) into this folder")
    parser.add_argument("--on-halt", choices=("stop", "resume"), default="stop",
                        help="after a drawdown halt: stop trading (default, the desk without an operator) or resume "
                             "as an operator approving it --resume-after hours later would")
    parser.add_argument("--resume-after", type=_hours, default=24.0, metavar="HOURS",
                        help="with --on-halt resume: hours of candle time from a halt to its resume (default 24)")


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours >= 0")
    return value


def add_strategies_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategies", type=lambda text: [n.strip() for n in text.split(",") if n.strip()],
                        help="comma-separated strategies to run with their default parameters, your own "
                             "included (default: the built-ins; see `python -m bot strategies list`)")


def add_market_args(parser: argparse.ArgumentParser) -> None:
    """Which part of a candle folder to replay (`replay`, `ml report`)."""
    parser.add_argument("--symbols", help="comma-separated symbols (default: every symbol in the data)")
    parser.add_argument("--intervals", type=interval_pair, default=("15", "5"),
                        help="slow,fast interval, the fast one dividing the slow one (default 15,5)")
    parser.add_argument("--from", dest="start", type=_date, help="first candle time, UTC (YYYY-MM-DD[THH:MM])")
    parser.add_argument("--to", dest="end", type=_date, help="end (exclusive), UTC")


def _date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2021-05-01 or 2021-05-01T12:00") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
