"""`python -m bot ml report` (does the filter help? walk-forward on replayed phantoms) and
`python -m bot ml models` (the registry of a bot).

    python -m bot ml report --data ../shared/data/candles/binance_spot_2020-12_2021-07
    python -m bot ml report --db sqlite:///var/replay.db --bot replay     # phantoms of an earlier replay

The report replays the candles without the filter (a phantom's outcome does not depend on whether the
signal was taken) and runs, per strategy, the same walk-forward, recipe and decision rule as the gate:
Brier score of the model vs the base rate and EV lift, per fold and pooled, then says plainly whether
the filter helps. Nothing is tuned on these folds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli_replay import add_market_args
from bot.settings import Settings, normalize_database_url

if TYPE_CHECKING:  # the ML stack (scikit-learn) is imported only when an `ml` command runs
    from core.phantom import Phantom


def register(subparsers: Any, settings: Callable[[], Settings]) -> None:
    ml = subparsers.add_parser("ml", help="the ML filter: walk-forward report, model registry")
    sub = ml.add_subparsers(dest="ml_command", required=True)

    rp = sub.add_parser("report", help="walk-forward Brier and EV lift per strategy on replayed phantoms")
    rp.add_argument("--data", type=Path, help="candle folder to replay (without --db)")
    add_market_args(rp)
    rp.add_argument("--db", help="read the closed phantoms of an earlier replay from this database instead")
    rp.add_argument("--bot", default="replay", help="bot id of that replay (default: replay)")
    rp.add_argument("--no-placebo", dest="placebo", action="store_false",
                    help="skip the shuffled-label reference model")
    rp.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    rp.add_argument("--funding", type=Path, help="folder of funding-rate files (default: the --data folder)")
    rp.set_defaults(func=lambda args: _report(args, settings))

    models = sub.add_parser("models", help="list a bot's models (version, samples, Brier, lift, champion)")
    models.add_argument("--db", help="database URL (default: DATABASE_URL)")
    models.add_argument("--bot", default="replay")
    models.set_defaults(func=lambda args: _models(args, settings))


async def _replayed(args: argparse.Namespace) -> list[Phantom]:
    from bot.replay import _files_market, _funding, _intervals
    from core.config import BotConfig
    from core.engine import Engine
    from core.market.replay import WARMUP_CANDLES, ReplayFeed, history_before
    from core.persistence import MemoryStore
    from core.runner import run

    series, start_ms, end_ms, _ = _files_market(args)
    slow, fast = _intervals(args)
    config = BotConfig(id="ml-report", symbols=sorted({s.symbol for s in series}), slow_interval=slow,
                       fast_interval=fast)
    store = MemoryStore()
    engine = Engine(config, funding=_funding(args, config.symbols))  # phantom R with funding: the labels' truth
    await run(engine, ReplayFeed(series, start_ms=start_ms, end_ms=end_ms).stream(), store,
              flush_every=50_000, history=history_before(series, start_ms, WARMUP_CANDLES))
    return await store.closed_phantoms(config.id)


async def _from_db(url: str, bot_id: str) -> list[Phantom]:
    from storage.db import create_engine
    from storage.ml_registry import learning_phantoms

    engine = create_engine(url)
    try:
        return await learning_phantoms(engine, bot_id)
    finally:
        await engine.dispose()


def _report(args: argparse.Namespace, settings_fn: Callable[[], Settings]) -> int:
    settings_fn()  # logging and redaction like every command
    if args.db:
        phantoms = asyncio.run(_from_db(normalize_database_url(args.db), args.bot))
    elif args.data:
        from bot.replay import ReplayError
        from storage.candle_files import BadCandleFile

        try:
            phantoms = asyncio.run(_replayed(args))
        except (ReplayError, BadCandleFile, FileNotFoundError) as exc:
            sys.stderr.write(f"phantomdesk: {exc}\n")
            return 1
    else:
        sys.stderr.write("phantomdesk: ml report needs --data DIR (replay) or --db URL (an earlier replay)\n")
        return 1
    if not phantoms:
        sys.stderr.write("phantomdesk: no closed phantoms to learn from\n")
        return 1
    from core.ml.dataset import build
    from core.ml.filter import FilterSettings
    from core.ml.report import format_report, verdict, walk_forward_report

    filter_settings = FilterSettings()
    reports = walk_forward_report(build(phantoms), filter_settings, placebo=args.placebo)
    if args.json:
        doc = {"strategies": [r.as_dict() for r in reports], "helps": [r.strategy for r in reports if r.helps],
               "verdict": verdict(reports)}
        sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
    else:
        sys.stdout.write("\n".join(format_report(reports, filter_settings)) + "\n")
    return 0


def _models(args: argparse.Namespace, settings_fn: Callable[[], Settings]) -> int:
    settings = settings_fn()
    url = normalize_database_url(args.db) if args.db else settings.database_url

    async def listing() -> list[Any]:
        from storage.db import create_engine
        from storage.ml_registry import SqlModelRegistry

        engine = create_engine(url)
        try:
            return await SqlModelRegistry(engine, settings.signing_key()).list(args.bot)
        finally:
            await engine.dispose()

    rows = asyncio.run(listing())
    out = [f"{'strategy':<16}{'version':>8}{'samples':>9}{'Brier':>9}{'base':>9}{'lift R':>9}  decision"]
    for m in rows:
        ch = m.metrics.get("challenger", {})
        base = (m.metrics.get("base_rate") or {}).get("brier")
        out.append(f"{m.strategy:<16}{m.version:>8}{m.n_samples:>9}{ch.get('brier') or 0:>9.4f}{base or 0:>9.4f}"
                   f"{ch.get('lift_r') or 0:>+9.3f}  {'CHAMPION ' if m.is_champion else ''}"
                   f"{'promoted' if m.metrics.get('promoted') else 'refused'}: {m.metrics.get('why', '')}")
    sys.stdout.write("\n".join(out) + "\n")
    return 0
