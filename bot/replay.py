"""The replay (`python -m bot replay`, candle files) and the demo (`python -m bot demo`, the synthetic
market: what `make run` shows); their arguments are defined in bot/cli_replay.py.

A replay writes to the database as it goes (batches of signals + phantoms + checkpoint, one
transaction each) and, run again with the same command, resumes from its checkpoint: a replay killed
at any moment ends with the same digests as one never interrupted. `--json` ends stdout with one JSON
object (counts, stats, digests, throughput); the printed report (core/report.py) holds the same figures,
and `--out DIR` writes it as Markdown with the trades (CSV) and the equity curve (PNG). On a terminal a
progress bar with its ETA runs on stderr.

A drawdown halt stops the bot for the rest of the replay (`--on-halt stop`, what the desk does until an
admin decides), or is resumed `--resume-after` hours of candle time later as an approving admin would
(`--on-halt resume`); either way every halt (and resume) is in the checkpoint and in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import hashlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, text

from bot.settings import Settings, normalize_database_url
from core.config import BotConfig
from core.engine import CandleResult, Engine
from core.funding import FundingSchedule
from core.ledger import TradeRecord
from core.market.candle import INTERVAL_MS, Candle, dt_to_ms, ms_to_dt
from core.market.replay import WARMUP_CANDLES, ReplayFeed, history_before
from core.market.series import CandleSeries
from core.market.synthetic import SyntheticFeed
from core.ml.evidence import EvidenceRule
from core.ml.filter import FilterSettings, MLScorer
from core.ml.report import replay_fields
from core.ml.store import ScorerStore
from core.ml.worker import training_pool
from core.report import (
    Block,
    Halt,
    Period,
    backtest_fields,
    closed_facts,
    funding_note,
    render_markdown,
    render_text,
    replayed,
    report_blocks,
    summary,
    trade_summary,
)
from core.runner import paper_engine, run
from core.stats import equity_curve
from core.strategies import STRATEGIES
from core.strategies.params import first_error
from core.trader import Trader
from core.universe import UniverseRule
from core.universe_replay import SeriesDirectory, UniverseGate
from storage import migrations
from storage.bots import set_status, upsert_bot
from storage.candle_files import BadCandleFile, candle_files, read_candle_dir
from storage.db import create_engine, session_factory, when_available
from storage.engine_store import SqlEngineStore
from storage.funding_files import funding_files, read_funding_dir
from storage.hotstate import connect_redis
from storage.journal import Journal
from storage.ledger import SqlLedger
from storage.ml_registry import SqlModelRegistry, learning_phantoms
from storage.models import BotState, MLModel, Order, PhantomTrade, RecoveryItem, Signal, Trade, TradeStatsCache

log = logging.getLogger("phantomdesk.replay")


class ReplayError(Exception):
    pass


def _intervals(args: argparse.Namespace) -> tuple[str, str]:
    slow, fast = args.intervals  # checked by the parser (bot/cli.py interval_pair)
    return slow, fast


def _files_market(args: argparse.Namespace) -> tuple[list[CandleSeries], int | None, int | None, str]:
    slow, fast = _intervals(args)
    symbols = [s.strip().upper() for s in args.symbols.split(",")] if args.symbols else None
    series = read_candle_dir(args.data, symbols, [slow, fast])
    if not series:
        raise ReplayError(f"--data: no {slow}/{fast} candle files for the requested symbols in {args.data}")
    files = [f"{p.name}:{p.stat().st_size}" for p in candle_files(args.data)]
    files += [f"{p.name}:{p.stat().st_size}" for p in funding_files(args.funding or args.data)]  # same run?
    run_key = json.dumps([files, symbols, [slow, fast], str(args.start), str(args.end)])
    return (series, dt_to_ms(args.start) if args.start else None, dt_to_ms(args.end) if args.end else None,
            run_key)


def _synthetic_market(args: argparse.Namespace) -> tuple[list[CandleSeries], int | None, int | None, str]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    feed = SyntheticFeed(start=start, days=args.days, warmup_days=5, seed=args.seed)
    return feed.series, feed.start_ms, None, json.dumps(["synthetic", args.days, args.seed])


def _funding(args: argparse.Namespace, symbols: list[str]) -> FundingSchedule:
    """The funding series beside the candles (or in --funding DIR); the synthetic demo has none."""
    folder = args.funding or args.data
    return read_funding_dir(folder, symbols) if folder is not None else FundingSchedule()


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
        for table in (Order, Trade, PhantomTrade, Signal, BotState, TradeStatsCache, MLModel, RecoveryItem):
            await session.execute(delete(table).where(table.bot_id == bot_id))


class Halts:
    """The drawdown halts a replay saw, kept in the checkpoint's extra (a resumed replay reports them all),
    and with `resume_after` the operator of --on-halt resume: a halted bot is resumed once that much
    candle time has passed, as an admin approving it then would (core.risk.RiskState.resume, what the
    desk's resume does). Candle time only: the same command gives the same halts, resumes and digests."""

    def __init__(self, engine: Engine, trader: Trader, resume_after: timedelta | None) -> None:
        self.engine, self.trader, self.resume_after = engine, trader, resume_after
        self.halts: list[Halt] = []

    async def restored(self) -> None:  # run()'s after_restore: the engine holds the checkpoint's extra
        self.halts = [Halt.from_json(h) for h in self.engine.extra.get("halts", [])]

    def on_result(self, result: CandleResult) -> None:
        state = self.trader.state
        if not result.notices and (self.resume_after is None or not state.halted):
            return  # most candles: nothing to look at
        assert self.engine.after is not None
        now = ms_to_dt(self.engine.after[0])  # the close of the candle just processed: its signals' time
        if any(n.kind == "drawdown_halt" for n in result.notices):
            self.halts.append(Halt(now, state.halt_reason or "drawdown guard"))
        elif (self.resume_after is not None and state.halted and self.halts and self.halts[-1].resumed_at is None
              and now >= self.halts[-1].at + self.resume_after):
            state.resume()
            self.halts[-1].resumed_at = now
        else:
            return
        self.engine.extra["halts"] = [h.as_json() for h in self.halts]  # saved with the next checkpoint


class Progress:
    """A progress bar over candle time with its ETA on stderr; a no-op unless `show`."""

    EVERY = 500  # candles between updates: the bar costs nothing measurable

    def __init__(self, show: bool, period: Period, done_ms: int | None) -> None:
        self.show, self.start_ms, self._n = show, dt_to_ms(period.start), 0
        self.total_s = (period.end - period.start).total_seconds()
        self.done_s = 0.0 if done_ms is None else max(0.0, (done_ms - self.start_ms) / 1000)
        self.bar: Any = None  # rich's Progress while running, shown
        self.task: Any = None

    @contextmanager
    def running(self) -> Iterator[Progress]:
        if not self.show:
            yield self
            return
        from rich.console import Console
        from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        with Bar(TextColumn("replay [bold]{task.fields[day]}"), BarColumn(), TaskProgressColumn(),
                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                 transient=True, refresh_per_second=4) as bar:
            self.bar = bar
            self.task = bar.add_task("replay", total=self.total_s, completed=int(self.done_s), day="")
            yield self

    def tick(self, engine: Engine) -> None:
        self._n += 1
        if self.bar is not None and self._n % self.EVERY == 0 and engine.after is not None:
            at = engine.after[0]
            self.bar.update(self.task, completed=(at - self.start_ms) / 1000, day=f"{ms_to_dt(at):%Y-%m-%d}")


@dataclass
class Outcome:
    doc: dict[str, Any]  # the --json summary
    blocks: list[Block]  # the report
    trades: list[TradeRecord]  # closed
    capital: Decimal
    period: Period
    halts: list[Halt]


async def replay(args: argparse.Namespace, settings: Settings,
                 market: Callable[[argparse.Namespace], tuple[list[CandleSeries], int | None, int | None, str]],
                 ) -> Outcome:
    url = normalize_database_url(args.db) if args.db else settings.database_url
    stack = ExitStack()  # the ML filter trains in a worker process beside the replay; it starts up meanwhile
    pool = stack.enter_context(training_pool()) if args.ml else None
    with stack:
        return await _replay(args, settings, market, url, pool)


def _universe_rule(args: argparse.Namespace) -> UniverseRule | None:
    text = getattr(args, "universe", None)
    if not text:
        return None
    try:
        return UniverseRule.model_validate_json(text)
    except ValidationError as exc:  # one line naming the field (bad JSON reads as one too)
        raise ReplayError(f"--universe: {first_error(exc)}") from None


async def _gated(candles: AsyncIterator[Candle], engine: Engine, gate: UniverseGate | None) -> AsyncIterator[Candle]:
    """The candles, the universe re-selected at fixed market times before the candle that reaches them: only its
    symbols get new entries; open trades and phantoms elsewhere carry on (every candle still flows)."""
    async for candle in candles:
        if gate is not None and (chosen := gate.at(candle.open_ms + INTERVAL_MS[candle.interval])) is not None:
            engine.symbols = frozenset(chosen.symbols)
        yield candle


async def _replay(args: argparse.Namespace, settings: Settings,
                  market: Callable[[argparse.Namespace], tuple[list[CandleSeries], int | None, int | None, str]],
                  url: str, pool: Executor | None) -> Outcome:
    series, start_ms, end_ms, run_key = market(args)
    slow, fast = _intervals(args)
    window = replayed(series, start_ms, end_ms, slow)
    if window is None:
        raise ReplayError("no candles to replay between --from and --to")
    period, closes = window
    symbols = sorted({s.symbol for s in series})
    rule = _universe_rule(args)
    config = BotConfig(id=args.bot, symbols=[] if rule else symbols, universe=rule, slow_interval=slow,
                       fast_interval=fast, mode="replay",
                       **({"strategies": _strategies(args.strategies)} if args.strategies else {}))
    gate = UniverseGate(rule, SeriesDirectory(series), timedelta(hours=args.universe_refresh)) if rule else None
    run_key += ("" if args.ml_gate == "evidence" else f"|ml-gate={args.ml_gate}") if args.ml else "|no-ml"
    resume_after = timedelta(hours=args.resume_after) if args.on_halt == "resume" else None
    run_key += "" if resume_after is None else f"|resume-after={args.resume_after}h"
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
        funding = _funding(args, symbols)
        # the ML filter's verdicts take effect at deterministic market times; its models go to the signed registry
        scorer = MLScorer(config.id, FilterSettings.for_bot(config, rule=EvidenceRule(always=args.ml_gate == "always")),
                          executor=pool) if args.ml else None
        engine, trader = paper_engine(config, funding, scorer)
        run_store = store if scorer is None else ScorerStore(
            store, scorer, SqlModelRegistry(engine_db, settings.signing_key(), redis),
            outcomes=lambda bot_id: learning_phantoms(engine_db, bot_id))
        engine.extra["run_id"] = run_id
        halts = Halts(engine, trader, resume_after)
        ledger = SqlLedger(engine_db, journal, redis)
        feed = ReplayFeed(series, start_ms=start_ms, end_ms=end_ms)
        log.info("replay %s: %s, resuming: %s", run_id, feed.describe(), restored.checkpoint is not None)
        done = restored.checkpoint.after[0] if restored.checkpoint and restored.checkpoint.after else None
        progress = Progress(not args.json and sys.stderr.isatty(), period, done)

        def on_result(result: CandleResult) -> None:
            halts.on_result(result)
            progress.tick(engine)

        with progress.running():
            report = await run(engine, _gated(feed.stream(), engine, gate), run_store, ledger=ledger,
                               flush_every=args.flush_every, on_result=on_result, ledger_batched=True,
                               history=history_before(series, start_ms, WARMUP_CANDLES),
                               after_restore=halts.restored)
        while (await ledger.flush_journal()).remaining:  # noqa: ASYNC110 - the database must take the backlog
            await asyncio.sleep(1)

        async def final_report() -> Outcome:
            closed = await store.closed_phantoms(config.id)
            trades = await ledger.closed_trades(config.id)
            doc = summary(dict(engine.counters), closed, report.elapsed_s, report.processed)
            doc.update(trade_summary(trades, config.capital, period))
            doc.update(replay_fields(scorer))
            doc.update(bot=config.id, run_id=run_id, resumed=report.resumed_from is not None,
                       warmed=report.warmed, data_gaps=len(feed.gaps), open_at_end=len(trader.trades),
                       funding_missing=[s for s in symbols if not funding.covers(s)])
            if gate is not None:
                doc.update(universe=list(gate.current.symbols) if gate.current else [],
                           universe_changes=gate.changes, universe_turnover_estimated=list(gate.directory.estimated))
            async with engine_db.connect() as conn:  # the database agrees with the engine's own count
                doc["signals_in_db"] = (await conn.execute(
                    text("SELECT count(*) FROM signals WHERE bot_id = :b"), {"b": config.id})).scalar()
                reasons = (await conn.execute(text(
                    "SELECT action, reason, count(*) FROM signals WHERE bot_id = :b GROUP BY action, reason"),
                    {"b": config.id})).all()
            doc.update(backtest_fields(period, closes, config.capital, halts.halts, args.on_halt, args.resume_after,
                                       [(a, r, int(n)) for a, r, n in reasons]))
            doc["funding_note"] = funding_note(symbols, doc.get("funding_missing"))
            if resume_after is not None and not trader.state.halted:  # the checkpoint's halt was approved
                async with session_factory(engine_db).begin() as session:
                    await set_status(session, config.id, "running", None)
            stats = await store.phantom_stats(config.id)
            blocks = report_blocks(f"phantomdesk replay — bot {config.id}", doc, stats)
            return Outcome(doc, blocks, trades, config.capital, period, halts.halts)

        return await when_available(final_report)
    finally:
        if redis is not None:
            await redis.aclose()
        await engine_db.dispose()


TRADE_COLUMNS = ("id", "signal_id", "symbol", "strategy", "side", "qty", "leverage", "entry_time", "entry_price",
                 "stop_loss", "take_profit", "exit_time", "exit_price", "exit_reason", "fees", "funding", "gross_pnl",
                 "net_pnl", "pnl_pct", "realized_r", "exit_estimated")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")  # 0.0000000000 (the database's scale) -> 0
    return value.isoformat() if isinstance(value, datetime) else str(value)


def write_out(folder: Path, outcome: Outcome) -> None:
    """report.md, trades.csv (the closed trades, as the trades table holds them) and equity.png."""
    from bot.charts import backtest_chart  # matplotlib only when asked for

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.md").write_text(render_markdown(outcome.blocks), encoding="utf-8")
    with (folder / "trades.csv").open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(TRADE_COLUMNS)
        out.writerows([_cell(getattr(t, c)) for c in TRADE_COLUMNS] for t in outcome.trades)
    p = outcome.period
    halted = [(h.at, min(h.resumed_at or p.end, p.end)) for h in outcome.halts]
    (folder / "equity.png").write_bytes(backtest_chart(
        equity_curve(closed_facts(outcome.trades), outcome.capital), outcome.capital, (p.start, p.end), halted,
        "Replay"))


def main(args: argparse.Namespace, settings_fn: Callable[[], Settings],
         market: Callable[[argparse.Namespace], tuple[list[CandleSeries], int | None, int | None, str]]) -> int:
    settings = settings_fn()
    # what is loaded by now (the desk's modules, its libraries) lives until the process ends: the garbage
    # collector need not walk it again in every full collection, nor once more at exit (0.2 s of a replay)
    gc.freeze()
    try:
        outcome = asyncio.run(replay(args, settings, market))
    except (ReplayError, BadCandleFile, FileNotFoundError) as exc:
        sys.stderr.write(f"phantomdesk: {exc}\n")
        return 1
    if args.out is not None:
        write_out(args.out, outcome)
    out = sys.stdout
    if args.json:
        out.write(json.dumps(outcome.doc, sort_keys=True) + "\n")
    else:
        out.write("\n".join(render_text(outcome.blocks)) + "\n")
        if args.out is not None:
            out.write(f"written: {args.out / 'report.md'}, {args.out / 'trades.csv'}, {args.out / 'equity.png'}\n")
    out.flush()
    gc.freeze()  # the process ends now: the collector's pass at exit over the replay's objects frees nothing
    return 0


def files(args: argparse.Namespace, settings_fn: Callable[[], Settings]) -> int:
    return main(args, settings_fn, _files_market)


def synthetic(args: argparse.Namespace, settings_fn: Callable[[], Settings]) -> int:
    return main(args, settings_fn, _synthetic_market)
