"""The replay (`python -m bot replay`, candle files) and the demo (`python -m bot demo`, the synthetic
market: what `make run` shows); their arguments are defined in bot/cli_replay.py.

A replay writes to the database as it goes (batches of signals + phantoms + checkpoint, one
transaction each) and, run again with the same command, resumes from its checkpoint: a replay killed
at any moment ends with the same digests as one never interrupted. `--json` ends stdout with one JSON
object (counts, stats, digests, throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, text

from bot.settings import Settings, normalize_database_url
from core.config import BotConfig
from core.engine import Engine
from core.exchange.paper import PaperBroker
from core.instruments import Instruments
from core.market.candle import Candle, dt_to_ms, parse_interval
from core.market.replay import ReplayFeed, merge_order
from core.market.series import CandleSeries
from core.market.synthetic import SyntheticFeed
from core.ml.filter import FilterSettings, MLScorer
from core.ml.report import replay_fields
from core.ml.store import ScorerStore
from core.report import operator_report, summary, trade_summary
from core.runner import run
from core.strategies import STRATEGIES
from core.trader import Trader
from storage import migrations
from storage.bots import set_status, upsert_bot
from storage.candle_files import BadCandleFile, candle_files, read_candle_dir
from storage.db import create_engine, session_factory, when_available
from storage.engine_store import SqlEngineStore
from storage.hotstate import connect_redis
from storage.journal import Journal
from storage.ledger import SqlLedger
from storage.ml_registry import SqlModelRegistry, learning_phantoms
from storage.models import BotState, MLModel, Order, PhantomTrade, Signal, Trade, TradeStatsCache

log = logging.getLogger("phantomdesk.replay")
WARMUP_CANDLES = 1000  # history before --from fed to the indicators


class ReplayError(Exception):
    pass


def _intervals(args: argparse.Namespace) -> tuple[str, str]:
    parts = [p for p in args.intervals.split(",") if p.strip()]
    if len(parts) != 2:
        raise ReplayError(f"--intervals: give the slow and the fast interval, like 15,5 (got {args.intervals!r})")
    return parse_interval(parts[0]), parse_interval(parts[1])


def _files_market(args: argparse.Namespace) -> tuple[list[CandleSeries], int | None, int | None, str]:
    slow, fast = _intervals(args)
    symbols = [s.strip().upper() for s in args.symbols.split(",")] if args.symbols else None
    series = read_candle_dir(args.data, symbols, [slow, fast])
    if not series:
        raise ReplayError(f"--data: no {slow}/{fast} candle files for the requested symbols in {args.data}")
    files = [f"{p.name}:{p.stat().st_size}" for p in candle_files(args.data)]
    run_key = json.dumps([files, symbols, [slow, fast], str(args.start), str(args.end)])
    return (series, dt_to_ms(args.start) if args.start else None, dt_to_ms(args.end) if args.end else None,
            run_key)


def _synthetic_market(args: argparse.Namespace) -> tuple[list[CandleSeries], int | None, int | None, str]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    feed = SyntheticFeed(start=start, days=args.days, warmup_days=5, seed=args.seed)
    return feed.series, feed.start_ms, None, json.dumps(["synthetic", args.days, args.seed])


def _history(series: list[CandleSeries], start_ms: int | None) -> list[Candle]:
    """The candles before the streamed window, in merge order, for the indicators' warm-up."""
    if start_ms is None:
        return []
    before = [s.window(None, start_ms) for s in series]
    before = [s.take(slice(max(0, len(s) - WARMUP_CANDLES), len(s))) for s in before]
    which, row = merge_order(before)
    return [before[w].candle(r) for w, r in zip(which.tolist(), row.tolist(), strict=True)]


def _strategies(names: list[str]) -> dict[str, dict[str, Any]]:
    """--strategies: each with its default parameters."""
    if unknown := [n for n in names if STRATEGIES.get(n) is None]:
        raise ReplayError(f"--strategies: unknown strategy {unknown[0]!r} (known: {', '.join(STRATEGIES.names())}; "
                          "a file of your own goes in STRATEGIES_DIR)")
    return {n: {} for n in names}


async def _prepare_database(url: str) -> None:
    engine = create_engine(url, null_pool=True)
    try:
        current = await migrations.current_revision(engine)
    finally:
        await engine.dispose()
    if current is None:  # a new, empty database: a replay may set it up itself
        await asyncio.to_thread(migrations.upgrade, url)
    elif current != migrations.head_revision():
        raise ReplayError(f"the database is at migration {current}: run `python -m bot migrate` first")


async def _forget(engine: Any, bot_id: str) -> None:
    async with session_factory(engine).begin() as session:
        for table in (Order, Trade, PhantomTrade, Signal, BotState, TradeStatsCache, MLModel):
            await session.execute(delete(table).where(table.bot_id == bot_id))


async def replay(args: argparse.Namespace, settings: Settings,
                 market: Callable[[argparse.Namespace], tuple[list[CandleSeries], int | None, int | None, str]],
                 ) -> dict[str, Any]:
    url = normalize_database_url(args.db) if args.db else settings.database_url
    series, start_ms, end_ms, run_key = market(args)
    slow, fast = _intervals(args)
    symbols = sorted({s.symbol for s in series})
    config = BotConfig(id=args.bot, symbols=symbols, slow_interval=slow, fast_interval=fast,
                       **({"strategies": _strategies(args.strategies)} if args.strategies else {}))
    run_key += "" if args.ml else "|no-ml"
    # an edited strategy is another replay: resuming would mix two versions' signals
    run_key += json.dumps(sorted((n, STRATEGIES.get(n).version) for n in config.strategies))  # type: ignore[union-attr]
    run_id = hashlib.sha256((run_key + config.model_dump_json()).encode()).hexdigest()[:16]

    await _prepare_database(url)
    engine_db = create_engine(url)
    redis = await connect_redis(settings.redis_url)
    try:
        store = SqlEngineStore(engine_db, redis)
        # one journal per bot and database: records waiting for one database never land in another
        journal = Journal(settings.data_dir / "journal" /
                          f"ledger-{config.id}-{hashlib.sha256(url.encode()).hexdigest()[:8]}.jsonl")
        if args.fresh:
            await _forget(engine_db, config.id)
            journal.path.unlink(missing_ok=True)
        async with session_factory(engine_db).begin() as session:
            await upsert_bot(session, config)
            if args.fresh:  # a halt of the forgotten run is forgotten with it
                await set_status(session, config.id, "running", None)
        restored = await store.restore(config.id)
        if restored.checkpoint is not None and restored.checkpoint.extra.get("run_id") != run_id:
            raise ReplayError(f"the database holds a different replay for bot {config.id!r}: "
                              "add --fresh to start over, or use another --bot")
        instruments = Instruments()
        trader = Trader(config, instruments, PaperBroker(
            instruments, config.capital, slippage_bps=config.slippage_bps, taker_fee_pct=config.taker_fee_pct,
            watch_interval=config.fast_interval), mode="replay")
        # the ML filter trains inline at deterministic points; its models go to the signed registry
        scorer = MLScorer(config.id, FilterSettings.for_bot(config)) if args.ml else None
        engine = Engine(config, instruments=instruments, trader=trader, scorer=scorer)
        run_store = store if scorer is None else ScorerStore(
            store, scorer, SqlModelRegistry(engine_db, settings.signing_key(), redis),
            outcomes=lambda bot_id: learning_phantoms(engine_db, bot_id))
        engine.extra["run_id"] = run_id
        ledger = SqlLedger(engine_db, journal, redis)
        feed = ReplayFeed(series, start_ms=start_ms, end_ms=end_ms)
        log.info("replay %s: %s, resuming: %s", run_id, feed.describe(), restored.checkpoint is not None)
        report = await run(engine, feed.stream(), run_store, ledger=ledger, flush_every=args.flush_every,
                           history=_history(series, start_ms))
        while (await ledger.flush_journal()).remaining:  # noqa: ASYNC110 - the database must take the backlog
            await asyncio.sleep(1)

        async def final_report() -> dict[str, Any]:
            closed = await store.closed_phantoms(config.id)
            doc = summary(dict(engine.counters), closed, report.elapsed_s, report.processed)
            doc.update(trade_summary(await ledger.closed_trades(config.id), config.capital))
            doc.update(replay_fields(engine.counters, closed, scorer))
            doc.update(bot=config.id, run_id=run_id, resumed=report.resumed_from is not None,
                       warmed=report.warmed, data_gaps=len(feed.gaps))
            stats = await store.phantom_stats(config.id)
            doc["_report"] = operator_report(f"phantomdesk replay — bot {config.id}", doc, stats)
            async with engine_db.connect() as conn:  # the database agrees with the engine's own count
                doc["signals_in_db"] = (await conn.execute(
                    text("SELECT count(*) FROM signals WHERE bot_id = :b"), {"b": config.id})).scalar()
            return doc

        return await when_available(final_report)
    finally:
        if redis is not None:
            await redis.aclose()
        await engine_db.dispose()


def main(args: argparse.Namespace, settings_fn: Callable[[], Settings],
          market: Callable[[argparse.Namespace], tuple[list[CandleSeries], int | None, int | None, str]]) -> int:
    settings = settings_fn()
    try:
        doc = asyncio.run(replay(args, settings, market))
    except (ReplayError, BadCandleFile, FileNotFoundError) as exc:
        sys.stderr.write(f"phantomdesk: {exc}\n")
        return 1
    lines = doc.pop("_report")
    out = sys.stdout
    if args.json:
        out.write(json.dumps(doc, sort_keys=True) + "\n")
    else:
        out.write("\n".join(lines) + "\n")
    out.flush()
    return 0


def files(args: argparse.Namespace, settings_fn: Callable[[], Settings]) -> int:
    return main(args, settings_fn, _files_market)


def synthetic(args: argparse.Namespace, settings_fn: Callable[[], Settings]) -> int:
    return main(args, settings_fn, _synthetic_market)
