"""The host's trading side: one market feed fanned out to every bot, each bot its own engine, trader,
venue and stores. One bot's failure is logged, reported and contained; the others carry on.

Per bot: Engine (+ Trader + PaperBroker, or LiveVenue in front of BybitBroker) → core.runner.run over
its own candle queue, saving a batch whenever the queue runs dry, writing each trade to the ledger as it
happens. Pause/resume go to the database and to the running trader at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sentry_sdk
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.settings import Settings
from core.config import BotConfig
from core.decisions import Option, RecoveryDraft, RecoveryKind, options_of
from core.desk import RetrainQueued
from core.engine import CandleResult, Engine
from core.exchange.broker import Broker, Fill, FundingFee, OrderState
from core.exchange.bybit_broker import AccountSetup, BybitBroker
from core.exchange.paper import PaperBroker
from core.funding import FundingSchedule
from core.instruments import Instruments
from core.live import LiveVenue, OrderKind, OrderOutcome, apply_outcome, reconcile_once, run_orders
from core.market.candle import Candle, Feed, dt_to_ms, ms_to_dt
from core.market.replay import ReplayFeed, sort_key
from core.market.synthetic import SyntheticFeed
from core.ml.filter import FilterSettings, MLScorer
from core.ml.store import ScorerStore
from core.placement import place
from core.recovery import Effect, Item, Outcome, perform
from core.runner import run
from core.trader import Closing, EntryEnded, Notice, NoticeKind, Trader
from core.universe import MarketDirectory, Universe, UniverseChange, UniverseView, by_hand, change
from core.universe import select as select_universe
from storage.bots import config_of, list_bots, set_status, upsert_bot
from storage.candle_files import read_candle_dir
from storage.candle_store import CandleStore
from storage.db import DB_DOWN, is_db_down, session_factory
from storage.engine_store import SqlEngineStore
from storage.funding_store import FundingStore
from storage.instances import Instances
from storage.journal import Journal
from storage.leases import Leases
from storage.ledger import SqlLedger
from storage.ml_registry import SqlModelRegistry, learning_phantoms
from storage.models import Bot, Trade
from storage.recovery import RecoveryBook

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("phantomdesk.runtime")

Notify = Callable[[Notice], None]  # enqueues for the notifier: never blocks trading
WARMUP = 300  # candles per series from the store before going live
STORE_BATCH = 2000  # candles per candle-store transaction at most
CHECK_AFTER_S = 5.0  # an entry whose send stayed unconfirmed is looked up again after this
FEED_SILENT_S = 90.0  # a live feed silent this long (from its start) is "not receiving": /health fails
FEED_RETRY_S, FEED_RETRY_MAX_S = 1.0, 60.0  # a failed feed restarts after 1 s, doubled per failure in a row
# stop(): the parts of the host's SHUTDOWN_BUDGET_S (8 s), each bounded so the whole stays within it
FEED_STOP_S = 1.0  # twice at most: the write in progress, then the last batch
BOT_DRAIN_S = 3.5  # every bot's final save (its last batch and checkpoint)
SIDE_STOP_S = 0.5  # lease heartbeat, halts being stored


@dataclass
class BotRuntime:
    config: BotConfig
    engine: Engine
    trader: Trader
    store: Any
    ledger: SqlLedger
    scorer: MLScorer
    signals: SqlEngineStore  # amends a signal at once (an entry the exchange refused)
    queue: asyncio.Queue[Candle | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[Any] | None = None
    venue: LiveVenue | None = None  # live bots: orders and fills go through the exchange
    side_tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    error: str | None = None
    processed: int = 0
    saved: int = 0  # `processed` as of the last batch the store took
    skipped: int = 0  # candles at or before its checkpoint: they only warmed the indicators
    ready: bool = False  # its state is restored: before that its figures are the configured defaults
    held_symbols: set[str] = field(default_factory=set)  # open trades on symbols no longer configured
    universe: Universe | None = None  # a bot whose symbols are a rule: the rule's latest selection
    universe_checked: datetime | None = None  # when the rule was last applied (wall clock)
    # one at a time: reconciliation rounds, recovery effects and the exchange's reports move the trader
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    retraining: asyncio.Lock = field(default_factory=asyncio.Lock)  # one retrain of its models at a time

    def set_saved(self) -> None:
        self.saved = self.processed

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def symbols(self) -> tuple[str, ...]:
        """What the bot may open new positions on: its list, or its universe's current selection."""
        if self.config.universe is not None:
            return self.universe.symbols if self.universe is not None else ()
        return tuple(self.config.symbols)

    def in_use(self) -> set[str]:
        """Symbols whose candles the bot still needs beyond its own: open trades and active phantoms run to their
        end on a symbol that left (the store's open trades until its trader is restored, then the trader's)."""
        trades = {t.record.symbol for t in self.trader.trades.values()}
        phantoms = {symbol for symbol, _ in self.engine.book.active}
        restored = self.ready and (self.venue is None or bool(self.side_tasks))  # live: open trades loaded too
        return (set() if restored else self.held_symbols) | trades | phantoms

    async def candles(self) -> AsyncIterator[Candle]:
        while (candle := await self.queue.get()) is not None:
            yield candle


class Runtime:
    """Every bot of this process, the feed they share, and what the desk needs to steer them."""

    def __init__(self, settings: Settings, db: AsyncEngine, redis: Redis | None, notify: Notify,
                 leases: Leases | None = None, stopping: asyncio.Event | None = None) -> None:
        """`stopping`: the host's stop event (SIGTERM), so that a start-up in progress ends early too."""
        self.settings = settings
        self.leases = leases
        self.standby: dict[str, BotConfig] = {}  # bots another process holds: taken over when it stops
        # the processes on this database, to share the bots out fairly (core/placement.py)
        self.instances = Instances(db, leases.instance, _utc_now()) if leases is not None else None
        self.leading = True  # the first of the live processes by id: it runs the desk-wide jobs
        self.db = db
        self.redis = redis
        self.notify = notify
        self.bots: dict[str, BotRuntime] = {}
        self.candles = CandleStore(db)
        self.newest_candle: datetime | None = None
        self.feed_task: asyncio.Task[Any] | None = None
        self.lease_task: asyncio.Task[Any] | None = None
        self.broker: BybitBroker | None = None
        self.feed_done = asyncio.Event()  # a replayed market ended (not set when the feed fails or is stopped)
        self.feed_error: str | None = None  # the feed failed and has not restarted yet
        self.source: Any = None  # the running feed (its refusals show on /health)
        self._feed_started = 0.0
        self.funding = FundingSchedule()  # shared by the bots' paper venues and phantom books; the job extends it
        self.feed_restarts = 0
        self.feed_retry_s = FEED_RETRY_S
        self._feed_failures = 0  # in a row: reset by the next candle
        self._fed: dict[tuple[str, str], datetime] = {}  # (symbol, interval) -> newest open time sent to the bots
        self._pending: list[Candle] = []  # fed to the bots, not yet in the candle store
        self._store_lock = asyncio.Lock()  # held by a candle-store write: stop() never cancels the feed inside one
        self.stopping = stopping or asyncio.Event()
        self.pool: ProcessPoolExecutor | None = None
        self.on_result: list[Callable[[str, CandleResult], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.directory: MarketDirectory | None = None  # listings and turnovers for universe rules (set lazily)
        self._feed_sync = asyncio.Lock()  # one universe change of the live feed at a time

    # --- start -----------------------------------------------------------------------------------------
    async def load_bots(self) -> list[BotConfig]:
        """The bots this process may trade: paper ones, and live ones in live mode. Replays' and the demo's
        bots are research records, never traded; without any other bot a first start creates `main`."""
        async with session_factory(self.db)() as session:
            rows = await list_bots(session)
        if skipped := [r.id for r in rows if r.mode == "replay"]:
            log.info("not traded here: %s (replay bots, their results stay readable)", ", ".join(skipped))
        if not [r for r in rows if r.mode != "replay"]:  # a first start: one paper bot on the default symbols
            config = BotConfig(id="main", name="main", symbols=list(self.settings.default_symbols))
            try:
                async with session_factory(self.db).begin() as session:
                    await upsert_bot(session, config)
                log.info("no bots yet: created bot 'main' (paper) on %s", ", ".join(config.symbols))
            except IntegrityError:  # another process starting at the same moment created it
                pass
            async with session_factory(self.db)() as session:
                rows = await list_bots(session)
        return [config_of(r) for r in rows
                if r.mode == "paper" or (r.mode == "live" and self.settings.trading_mode == "live")]

    async def start(self) -> None:
        self.standby = {c.id: c for c in await self.load_bots()}
        # funding settlements stored for every symbol traded here (paper fills and phantoms settle with them)
        self.funding = await FundingStore(self.db).schedule(
            s for c in self.standby.values() for s in (*c.symbols, *(c.universe.include if c.universe else ())))
        await self._take_leases(await self._placed_here())
        if self.leases is not None and not self.stopping.is_set():
            self.lease_task = asyncio.create_task(self._lease_heartbeat(), name="lease-heartbeat")

    async def _placed_here(self) -> set[str]:
        """Beat (this process is alive and holds its bots), then the bots placement gives this process: its
        fair share of the live processes' (core/placement.py). Every bot without a database of processes."""
        if self.instances is None or self.leases is None:
            return set(self.standby) | set(self.bots)
        me = self.leases.instance
        try:  # alive: beat within two beats (a beat every ttl/3), so a dead process's bots move within the ttl
            live = await self.instances.beat(sorted(self.bots), _utc_now(),
                                             timedelta(seconds=self.leases.ttl_s * 2 / 3))
        except DB_DOWN as exc:
            if not is_db_down(exc):
                raise
            log.warning("placement skipped (%s): the bots stay where they are", type(exc).__name__)
            return set(self.bots)
        self.leading = me <= min(live.instances, default=me)
        holders = {**live.holders, **dict.fromkeys(self.bots, me)}
        placed = place([*self.bots, *self.standby], {*live.instances, me}, holders)
        return {bot_id for bot_id, instance in placed.items() if instance == me}

    async def _take_leases(self, placed: set[str]) -> None:
        """Start every standby bot placed here whose lease this process can take now (none once stopping)."""
        for bot_id, config in list(self.standby.items()):
            if self.stopping.is_set():
                break
            if bot_id not in placed or (self.leases is not None and not await self.leases.acquire(bot_id)):
                continue
            del self.standby[bot_id]
            try:
                bot = await self._build(config)
                if self.feed_task is not None and self.settings.market_feed == "replay":
                    fed = await asyncio.to_thread(self._replayed_so_far, config)
                    self._catch_up(bot, fed)  # no await from here until it is in self.bots: no candle in between
                self.bots[bot_id] = bot
            except Exception as exc:  # one bad bot does not keep the others from trading
                log.exception("bot %s could not start", bot_id)
                self.notify(Notice("bot_failed", bot_id, f"bot {bot_id} could not start: {exc}"))
                continue
            if self.stopping.is_set():  # stopped during its journal flush: built, never traded, nothing to save
                break
            bot.task = asyncio.create_task(self._run_bot(bot), name=f"bot-{bot_id}")
        # a replayed market starts once a bot is held: a standby process must not consume it unheard
        if self.bots and self.feed_task is None and not self.stopping.is_set():
            self.feed_task = asyncio.create_task(self._feed(), name="market-feed")

    def _replayed_so_far(self, config: BotConfig) -> list[Candle]:
        """A replayed market's candles of a bot's series from the files (a worker thread)."""
        assert self.settings.feed_data is not None
        return list(ReplayFeed(read_candle_dir(self.settings.feed_data, config.symbols, config.intervals)).candles())

    def _catch_up(self, bot: BotRuntime, candles: list[Candle]) -> None:
        """A bot taken over while this process's replayed market runs gets the candles the feed already sent,
        in the feed's order: it resumes from its checkpoint as it would at the start of the feed."""
        fed = self._fed
        for candle in candles:
            if (last := fed.get((candle.symbol, candle.interval))) is not None and candle.open_time <= last:
                bot.queue.put_nowait(candle)

    async def _lease_heartbeat(self) -> None:
        assert self.leases is not None
        interval = max(1.0, self.leases.ttl_s / 3)
        while not await self._sleep_unless_stopping(interval):
            try:
                for bot_id in await self.leases.renew():  # lost: stop at once, save nothing (not ours now)
                    bot = self.bots.pop(bot_id, None)
                    if bot is not None:
                        if bot.task is not None:
                            bot.task.cancel()
                        self.standby[bot_id] = bot.config  # taken over again if its new holder stops
                    self.notify(Notice("lease_lost", bot_id, f"bot {bot_id}: lease lost, no longer traded here"))
                placed = await self._placed_here()
                for bot_id in [b for b in self.bots if b not in placed]:
                    await self._hand_over(bot_id)
                if placed & set(self.standby):
                    await self._take_leases(placed)
            except Exception:
                log.exception("lease heartbeat failed")

    async def _hand_over(self, bot_id: str) -> None:
        """Placed on another process (one joined, or this one holds more than its share): the bot ends its
        stream and saves its last batch and checkpoint, then its lease is released for the other to take."""
        assert self.leases is not None
        bot = self.bots.pop(bot_id)
        self._end_stream(bot)
        await self._await_saved([bot])
        await self.leases.release(bot_id)
        self.standby[bot_id] = bot.config
        log.info("bot %s handed over after %d candles: placed on another process", bot_id, bot.processed)

    async def _exchange(self) -> BybitBroker:
        """One BybitBroker per account, shared by the live bots (each reconciles its own symbols)."""
        if self.broker is None:
            s = self.settings
            assert s.bybit_api_key is not None and s.bybit_api_secret is not None  # settings enforce it in live mode
            broker = BybitBroker(s.bybit_api_key.get_secret_value(), s.bybit_api_secret.get_secret_value(),
                                 testnet=s.bybit_env == "testnet", demo=s.bybit_env == "demo",
                                 rest_url=s.bybit_rest_url, ws_url=s.bybit_private_ws_url, clock=_utc_now)
            await broker.load_instruments()
            await broker.start_stream()
            self.broker = broker
        return self.broker

    async def _build(self, config: BotConfig) -> BotRuntime:
        live = config.mode == "live" and self.settings.trading_mode == "live"
        venue: Any
        if live:
            broker = await self._exchange()
            instruments = broker.instruments
            for symbol in config.symbols:  # the account as the bot needs it, before it trades
                await self._prepare(broker, config, symbol)
            venue = LiveVenue(broker, config.fast_interval, (await broker.balance()).equity, clock=_utc_now,
                              entry_timeout_s=config.entry_timeout_s)
        else:
            instruments = Instruments()
            venue = PaperBroker(instruments, config.capital, slippage_bps=config.slippage_bps,
                                taker_fee_pct=config.taker_fee_pct, watch_interval=config.fast_interval,
                                funding=self.funding, maker_fee_pct=config.maker_fee_pct,
                                entry_timeout_s=config.entry_timeout_s)
        trader = Trader(config, instruments, venue, mode="live" if live else "paper")
        scorer = MLScorer(config.id, FilterSettings.for_bot(config, inline=False))
        engine = Engine(config, instruments=instruments, trader=trader, scorer=scorer, funding=self.funding)
        universe = await self._first_universe(config) if config.universe is not None else None
        if universe is not None:
            engine.symbols = frozenset(universe.symbols)
        for notice in engine.take_notices():  # a strategy of its configuration it runs without, and why
            self.notify(notice)
        inner = SqlEngineStore(self.db, self.redis)
        registry = SqlModelRegistry(self.db, self.settings.signing_key(), self.redis)
        store = ScorerStore(inner, scorer, registry, outcomes=lambda bot_id: learning_phantoms(self.db, bot_id),
                            notify_refusals=True)
        digest = hashlib.sha256(self.settings.database_url.encode()).hexdigest()[:8]
        journal = Journal(self.settings.data_dir / "journal" / f"ledger-{config.id}-{digest}.jsonl")
        ledger = SqlLedger(self.db, journal, self.redis)
        if backlog := journal.backlog():  # before trading resumes: what the last run could not write
            log.info("bot %s: replaying %d journal records", config.id, backlog)
        await ledger.flush_journal(stop=self.stopping.is_set)  # a stop ends it between two records
        # no new position while trades wait in memory (a full disk): exits of open ones still run
        engine.guards.insert(0, lambda *_: f"storage unavailable: {ledger.fault}" if ledger.fault else None)
        async with session_factory(self.db)() as session:  # their candles keep coming until they close
            held = set((await session.scalars(select(Trade.symbol).where(
                Trade.bot_id == config.id, Trade.status == "open"))).all())
        symbols = set(universe.symbols if universe is not None else config.symbols)
        return BotRuntime(config, engine, trader, store, ledger, scorer, inner, venue=venue if live else None,
                          held_symbols=held - symbols, universe=universe,
                          universe_checked=universe.at if universe is not None else None)

    async def _prepare(self, broker: BybitBroker, config: BotConfig, symbol: str) -> AccountSetup:
        setup = await broker.prepare_symbol(symbol, leverage=config.max_leverage, margin_mode=config.margin_mode)
        log.info("bot %s: %s set: %s mode, leverage %s, margin %s", config.id, symbol,
                 setup.position_mode.replace("_", "-"), setup.leverage, setup.margin_mode or "as the account has it")
        return setup

    async def prepare_symbol(self, bot_id: str, symbol: str) -> AccountSetup | None:
        """The account set for a symbol a running live bot starts trading (the universe adds one): its position
        mode read, the bot's margin mode and leverage set. None for a bot that is not live here."""
        bot = self.bots.get(bot_id)
        if bot is None or bot.venue is None or self.broker is None:
            return None
        return await self._prepare(self.broker, bot.config, symbol)

    async def _history(self, bot: BotRuntime) -> list[Candle]:
        """Live data: the stored candles warm the indicators. A replayed market starts from its first
        candle and a resumed bot warms on the replay itself up to its checkpoint, so no history."""
        if self.settings.market_feed != "bybit":
            return []
        out: list[Candle] = []
        for symbol in bot.symbols:
            for interval in bot.config.intervals:
                out.extend(await self.candles.history(symbol, interval, WARMUP))
        return sorted(out, key=sort_key)

    async def _run_bot(self, bot: BotRuntime) -> None:
        try:
            await run(bot.engine, bot.candles(), bot.store, ledger=bot.ledger, flush_every=5000,
                      history=await self._history(bot), idle=bot.queue.empty,
                      on_result=lambda r: self._after(bot, r), on_saved=bot.set_saved,
                      after_restore=lambda: self._restored(bot), on_skipped=lambda c: self._skipped(bot, c),
                      now_ms=(lambda: dt_to_ms(_utc_now())) if self.settings.market_feed == "bybit" else None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            bot.error = f"{type(exc).__name__}: {exc}"
            with sentry_sdk.new_scope() as scope:  # one bot's failure, tagged, does not stop the others
                scope.set_tag("bot_id", bot.id)
                sentry_sdk.capture_exception(exc)
            log.exception("bot %s stopped", bot.id)
            self.notify(Notice("bot_failed", bot.id, f"bot {bot.id} stopped: {bot.error}"))

    def _skipped(self, bot: BotRuntime, candle: Candle) -> None:
        if not bot.skipped:
            log.info("bot %s resumes after its checkpoint: candles up to %s only warm its indicators (a replayed "
                     "market it already traded, or a backfill)", bot.id, ms_to_dt(bot.engine.after[0])
                     if bot.engine.after else "?")
        bot.skipped += 1

    async def _restored(self, bot: BotRuntime) -> None:
        """The engine holds its checkpoint: the operator's status (the database) wins over it — a halt
        in the checkpoint is in the database too (the checkpoint's save writes it), so a halted checkpoint
        under a running row means an admin resumed the bot while it was down. Live bots then go live."""
        async with session_factory(self.db)() as session:
            row = await session.get(Bot, bot.id)
        state = bot.trader.state
        status = row.status if row is not None else "running"
        state.paused = status == "paused"
        if status == "halted":
            state.halted, state.halt_reason = True, row.status_reason if row is not None else None
        elif state.halted:
            state.resume()
        bot.ready = True
        if bot.config.universe is not None and not self.stopping.is_set():
            self._background(self.sync_feed())  # phantoms restored on symbols that left keep their candles
        if bot.venue is not None:
            await self._go_live(bot)

    # --- live bots ---------------------------------------------------------------------------------------
    async def _go_live(self, bot: BotRuntime) -> None:
        """Restored from the database: the ledger's open trades, the exchange's word on them, then the
        order sender and the report pump."""
        assert bot.venue is not None
        bot.trader.load_open(await bot.ledger.open_trades(bot.id))
        await self.reconcile(bot.id)
        bot.side_tasks = [
            asyncio.create_task(run_orders(bot.venue, lambda outcome: self._order_outcome(bot, outcome)),
                                name=f"orders-{bot.id}"),
            asyncio.create_task(self._pump(bot), name=f"fills-{bot.id}"),
        ]

    async def _pump(self, bot: BotRuntime) -> None:
        """Fills, funding and order states from the private stream, written to the ledger as they arrive."""
        assert bot.venue is not None
        async for event in bot.venue.broker.events():
            async with bot.lock:
                if isinstance(event, Fill):
                    bot.trader.on_fill(event)
                elif isinstance(event, FundingFee):
                    bot.trader.on_funding(event)
                elif isinstance(event, OrderState):
                    bot.trader.on_order(event)
                await self._settle(bot)

    async def _order_outcome(self, bot: BotRuntime, outcome: OrderOutcome) -> None:
        """What the exchange said about an order the bot sent: the trader's state machine moves at once."""
        async with bot.lock:
            apply_outcome(bot.trader, outcome)
            if outcome.unknown is not None and outcome.kind == OrderKind.OPEN and bot.venue is not None:
                trade = next((t for t in bot.trader.pending()
                              if bot.trader.entry_intent(t).order_link_id == outcome.link), None)
                if trade is not None:  # neither confirmed nor denied: look again shortly
                    asyncio.get_running_loop().call_later(CHECK_AFTER_S, bot.venue.queue.put_nowait,
                                                          (OrderKind.CHECK, bot.trader.entry_intent(trade)))
            if outcome.error is not None:
                self.notify(Notice("order_failed", bot.id, f"{outcome.kind} {outcome.link}: {outcome.error}",
                                   {"kind": str(outcome.kind)}))
            await self._settle(bot)

    async def _settle(self, bot: BotRuntime) -> None:
        """Write the trader's ledger events; entries that ended without a position make their signal
        REJECTED (with the exchange's words) and are reported."""
        ended = bot.trader.drain_ended()  # before any await: the engine's next candle must not take them
        await self._write_events(bot)
        for e in ended:
            await self._entry_ended(bot, e)

    async def _entry_ended(self, bot: BotRuntime, e: EntryEnded) -> None:
        if e.signal_id is not None and bot.engine.amend_signal(e.signal_id, e.reason) is not None:
            try:
                await bot.signals.amend_signal(e.signal_id, "REJECTED", e.reason)
            except Exception as exc:  # the next batch stores the same change
                log.warning("bot %s: signal %s amended in memory only for now (%s)", bot.id, e.signal_id,
                            type(exc).__name__)
        kind: NoticeKind = "entry_rejected" if e.status == "rejected" else "entry_cancelled"
        self.notify(Notice(kind, bot.id, f"{e.symbol}: entry {e.trade_id} {e.status}: {e.reason}",
                           {"trade_id": e.trade_id, "symbol": e.symbol}))

    async def _write_events(self, bot: BotRuntime) -> None:
        events, bot.trader.events = bot.trader.events, []
        for event in events:
            await bot.ledger.record(event)
            if event.kind in ("open", "close"):
                self.notify(_trade_notice(bot.id, event))

    def _scope(self, bot: BotRuntime) -> set[str]:
        """The symbols a bot's reconciliation answers for: its own, not those another live bot trades."""
        others = {s for b in self.bots.values() if b is not bot and b.venue is not None for s in b.symbols}
        return (set(bot.symbols) | {t.record.symbol for t in bot.trader.trades.values()}) - (
            others - set(bot.symbols))

    async def reconcile(self, bot_id: str) -> list[str]:
        """Exchange positions, executions and funding vs the bot's trades (at start and every 5 minutes),
        then any decision whose effect is still to be performed."""
        bot = self.bots.get(bot_id)
        if bot is None or bot.venue is None:
            return []
        now = datetime.now(UTC)
        since = datetime.fromisoformat(bot.engine.extra.get("reconciled_at") or (now - timedelta(days=7)).isoformat())
        book = RecoveryBook(self.db)

        async def raise_item(draft: RecoveryDraft) -> None:
            await self._raise(book, bot_id, draft)

        async with bot.lock:
            report = await reconcile_once(bot.trader, bot.venue.broker, since=since - timedelta(minutes=5), now=now,
                                          scope=self._scope(bot), raise_item=raise_item)
            for intent, state in report.resting:  # a limit entry still in the book (e.g. across a restart)
                bot.venue.watch_entry(intent, state)
            await self._settle(bot)
            bot.engine.extra["reconciled_at"] = now.isoformat()
            await bot.venue.refresh_equity()
        await self.finish_decisions(bot_id)
        bot.trader.state.critical_pending = await book.critical_pending(bot_id) > 0
        for note in report.notes:
            self.notify(Notice("reconciled", bot_id, note))
        return report.notes

    async def _raise(self, book: RecoveryBook, bot_id: str, draft: RecoveryDraft) -> int | None:
        """Raise an item (once per problem and state); the operator hears of a new one."""
        item_id, created = await book.raise_item(bot_id, draft.kind, dedupe_key=draft.dedupe_key, details=draft.details,
                                                 options=draft.options, critical=draft.critical)
        if created:
            self.notify(Notice("recovery", bot_id, draft.text, {"kind": draft.kind, "item": item_id}))
        return item_id if created else None

    # --- recovery decisions (core/recovery.py performs them over these ports) -------------------------------
    def account(self, bot_id: str) -> _Account | None:
        bot = self.bots.get(bot_id)
        return _Account(bot.trader, bot.venue.broker) if bot is not None and bot.venue is not None else None

    async def commit(self, bot_id: str) -> None:
        bot = self.bots.get(bot_id)
        if bot is not None:
            await self._settle(bot)

    async def resume_halted(self, bot_id: str, actor: str) -> str:
        async with session_factory(self.db).begin() as session:
            await set_status(session, bot_id, "running", None)
        self.set_paused(bot_id, False)
        return f"bot {bot_id} trades again; the drawdown is measured from its equity now"

    async def promote_model(self, bot_id: str, strategy: str, version: int, actor: str) -> str:
        registry = SqlModelRegistry(self.db, self.settings.signing_key(), self.redis)
        await registry.set_champion(bot_id, strategy, version, actor=actor, reason="promoted anyway")
        bot = self.bots.get(bot_id)
        if bot is not None:  # the live scorer switches now, not at the next restart
            in_force = await bot.scorer.reload_champion(registry, strategy)
            return f"{strategy} v{in_force} is the champion and scores from now on"
        return f"{strategy} v{version} is the champion (the bot adopts it when it starts)"

    async def act_on(self, item: Item, option: Option, actor: str) -> Effect:
        """An admin's decision, performed here (the desk recorded it first)."""
        bot = self.bots.get(item.bot_id or "")
        if bot is None:
            return await perform(item, option, self, actor)  # not traded here: queued (or a model/halt)
        async with bot.lock:
            effect = await perform(item, option, self, actor)
        if effect.recheck:
            self._background(self.reconcile(bot.id))
        bot.trader.state.critical_pending = await RecoveryBook(self.db).critical_pending(bot.id) > 0
        return effect

    async def finish_decisions(self, bot_id: str) -> None:
        """Decisions recorded but not performed (a crash between the press and the effect, or decided
        where the bot is not traded): performed now, each once."""
        book = RecoveryBook(self.db)
        for row in await book.unfinished(bot_id):
            item = Item(int(row.id), row.bot_id, RecoveryKind(row.kind), row.details or {})
            effect = await self.act_on(item, Option(str(row.decision)), "system")
            if effect.outcome == Outcome.QUEUED:
                continue
            await book.record_effect(item.id, effect.as_json(), "system")
            for draft in effect.follow_up:
                await self._raise(book, bot_id, draft)
            self.notify(Notice("recovery_done", bot_id, f"recovery #{item.id} ({item.kind}, {row.decision}): "
                                                        f"{effect.text}", {"item": item.id}))

    def _after(self, bot: BotRuntime, result: CandleResult) -> None:
        bot.processed += 1
        for notice in result.notices:
            if notice.kind == "drawdown_halt":  # stored, and resuming becomes an operator decision
                self._background(self._persist_halt(bot, notice))
            self.notify(notice)
        for event in result.ledger:  # written by the runner already; the operator hears of them
            self.notify(_trade_notice(bot.id, event))
        for listener in self.on_result:
            listener(bot.id, result)

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _persist_halt(self, bot: BotRuntime, notice: Notice) -> None:
        try:
            async with session_factory(self.db).begin() as session:
                await set_status(session, bot.id, "halted", bot.trader.state.halt_reason)
            await RecoveryBook(self.db).raise_item(
                bot.id, RecoveryKind.DRAWDOWN_HALT, dedupe_key=f"drawdown_halt:{bot.id}:{notice.details.get('peak')}",
                details=notice.details | {"reason": bot.trader.state.halt_reason},
                options=options_of(RecoveryKind.DRAWDOWN_HALT), critical=False, ttl=timedelta(days=30))
        except Exception:
            log.exception("could not store the halt of bot %s", bot.id)

    # --- the universe (bots whose symbols are a rule) ---------------------------------------------------------
    def _wanted(self) -> set[str]:
        """Every symbol the feed must carry: the bots' own, and those their open trades and phantoms are on."""
        return {s for b in self.bots.values() for s in (*b.symbols, *b.held_symbols, *b.in_use())}

    def _directory(self) -> MarketDirectory:
        if self.directory is None:
            from core.exchange.bybit_directory import BybitDirectory

            self.directory = BybitDirectory(self.settings.bybit_rest_url)
        return self.directory

    async def _first_universe(self, config: BotConfig) -> Universe:
        """A bot's universe at start: the rule over Bybit's listings now. Without live market data, or when Bybit
        does not answer, its included symbols until the next refresh (said to the operator)."""
        assert config.universe is not None
        now = _utc_now()
        if self.settings.market_feed != "bybit":
            log.info("bot %s: universe rule without live market data: its included symbols only", config.id)
            return by_hand(config.universe, now)
        try:
            directory = self._directory()
            listings, turnovers = await directory.listings(), await directory.turnovers(now)
            universe = select_universe(config.universe, listings, turnovers, now).universe
        except Exception as exc:
            log.warning("bot %s: universe not selected at start (%r): included symbols until the next refresh",
                        config.id, exc)
            self.notify(Notice("universe", config.id, f"universe of bot {config.id} not selected ({exc}); trading "
                               f"its included symbols until the next refresh: {', '.join(config.universe.include)}"))
            return by_hand(config.universe, now)
        self.notify(_universe_notice(config.id, universe, change((), universe.symbols), held=set()))
        return universe

    async def refresh_universe(self, *, force: bool = False) -> dict[str, UniverseChange]:
        """The scheduled refresh: each bot whose rule is due (its own interval, else every run of the job) is
        selected again over one read of Bybit's listings and tickers; then the live feed follows."""
        if self.settings.market_feed != "bybit":
            return {}
        now = _utc_now()
        due = [b for b in self.bots.values() if b.config.universe is not None and (
            force or b.universe_checked is None or b.config.universe.refresh_minutes is None
            or now - b.universe_checked >= timedelta(minutes=b.config.universe.refresh_minutes) - timedelta(seconds=5))]
        if not due:
            return {}
        directory = self._directory()
        listings, turnovers = await directory.listings(), await directory.turnovers(now)
        changes = {}
        for bot in due:
            assert bot.config.universe is not None
            chosen = select_universe(bot.config.universe, listings, turnovers, now).universe
            changes[bot.id] = self._apply_universe(bot, chosen)
        await self.sync_feed()
        return changes

    def _apply_universe(self, bot: BotRuntime, universe: Universe) -> UniverseChange:
        """From now on the bot enters only on `universe`; what it holds elsewhere runs to its end."""
        moved = change(bot.symbols, universe.symbols)
        bot.universe, bot.universe_checked = universe, universe.at
        bot.engine.symbols = frozenset(universe.symbols)
        if moved:
            held = bot.in_use() & set(moved.removed)
            log.info("bot %s: universe +%s -%s", bot.id, ",".join(moved.added) or "none",
                     ",".join(moved.removed) or "none")
            self.notify(_universe_notice(bot.id, universe, moved, held))
        return moved

    async def sync_feed(self) -> None:
        """The live feed carries exactly what the bots need: new symbols warmed up on their REST history (stored,
        then into the engines' indicators, as at start) and subscribed; symbols nobody needs any more unsubscribed.
        Both on the open connections (core.market.bybit_feed)."""
        from core.market.bybit_feed import BybitFeed

        async with self._feed_sync:
            source = self.source
            if not isinstance(source, BybitFeed):
                return
            wanted = self._wanted()
            added = sorted(wanted - set(source.symbols))
            removed = sorted(set(source.symbols) - wanted)
            if removed:
                await source.remove_symbols(removed)
            if not added:
                return
            await self._prepare_live(added)
            seen: dict[tuple[str, str], datetime] = {}
            intervals = sorted({iv for b in self.bots.values() for iv in b.config.intervals})
            keys = [(symbol, interval) for symbol in added for interval in intervals]
            # concurrently: the feed's own REST slots keep it under Bybit's per-IP limit
            found = await asyncio.gather(*(source.history(s, iv, WARMUP) for s, iv in keys), return_exceptions=True)
            for (symbol, interval), history in zip(keys, found, strict=True):
                if isinstance(history, BaseException):  # it streams anyway; its indicators warm on live candles
                    log.warning("no warm-up history for %s %s: %r", symbol, interval, history)
                    continue
                if history:
                    async with self._store_lock:
                        with contextlib.suppress(*DB_DOWN):
                            await self.candles.upsert(history)
                    for bot in self.bots.values():
                        if symbol in bot.symbols and interval in bot.config.intervals:
                            for candle in history:  # no await in between: the bot's runner cannot interleave
                                bot.engine.warm(candle)
                    seen[(symbol, interval)] = history[-1].open_time
                    self._fed[(symbol, interval)] = max(self._fed.get((symbol, interval), history[-1].open_time),
                                                        history[-1].open_time)
            await source.add_symbols(added, seen)

    async def _prepare_live(self, symbols: list[str]) -> None:
        """A symbol a live bot may now trade: its instrument rules loaded (a new listing is not in the broker's
        registry yet) and the account set for it (margin mode, leverage)."""
        if self.broker is None:
            return
        try:
            for symbol in symbols:
                self.broker.instrument(symbol)
        except KeyError:
            await self.broker.load_instruments()
        for bot in list(self.bots.values()):  # the bot's margin mode and leverage on the account, as at its start
            for symbol in (s for s in symbols if s in bot.symbols):
                try:
                    await self.prepare_symbol(bot.id, symbol)
                except Exception as exc:  # its orders there use the account as it is: said
                    log.warning("bot %s: account not set for %s (%s)", bot.id, symbol, exc)
                    self.notify(Notice("bot_failed", bot.id, f"bot {bot.id}: the account could not be set for "
                                       f"{symbol} ({exc}); its orders there use the account's current settings"))

    def universe(self, bot_id: str) -> UniverseView | None:
        """/universe: a rule's current selection with why each is in, and what it still holds elsewhere."""
        bot = self.bots.get(bot_id)
        if bot is None or bot.config.universe is None:
            return None
        held = sorted(bot.in_use() - set(bot.symbols))
        return UniverseView(bot.id, bot.config.universe, bot.universe, tuple(held))

    # --- the feed ----------------------------------------------------------------------------------------
    async def _feed_source(self) -> Feed:
        s = self.settings
        # a symbol removed from a bot while it holds a trade there keeps its candles until the trade ends; a
        # replayed market also carries the standby bots' series, for a bot taken over while it runs
        symbols = sorted(self._wanted() | {sym for c in self.standby.values() for sym in c.symbols})
        intervals = sorted({iv for c in [*(b.config for b in self.bots.values()), *self.standby.values()]
                            for iv in c.intervals})
        if s.market_feed == "replay":
            assert s.feed_data is not None
            return ReplayFeed(read_candle_dir(s.feed_data, symbols or None, intervals or None))
        if s.market_feed == "synthetic":
            return SyntheticFeed(start=datetime(2026, 1, 1, tzinfo=UTC), intervals=intervals or ("15", "5"))
        from core.exchange.bybit_public import MAINNET_PUBLIC_LINEAR
        from core.market.bybit_feed import BybitFeed

        # the first (re)connect backfills everything that closed since the newest stored candle
        seen = {(sym, iv): t for sym in symbols for iv in intervals
                if (t := await self.candles.last_open_time(sym, iv)) is not None}
        return BybitFeed(symbols, intervals, clock=_utc_now, last_seen=seen, rest_url=s.bybit_rest_url,
                         ws_url=s.bybit_public_ws_url or MAINNET_PUBLIC_LINEAR)

    async def _feed(self) -> None:
        """The market feed, supervised. A failure is logged with its traceback and reported once per run of
        failures, shows on /health until the feed runs again, and restarts it after a capped backoff (a
        live feed resumes from the newest stored candle). A replayed market that ended is done."""
        try:
            while not self.stopping.is_set():
                try:
                    await self._feed_once()
                    if self.settings.market_feed == "bybit" and not self.stopping.is_set():
                        raise ConnectionError("the live market stream ended")  # it never should: restart it
                    if not self.stopping.is_set():  # the replayed market ended: its last batch, then done
                        await self._store_pending()
                except Exception as exc:
                    self._feed_failures += 1
                    self.feed_error = f"{type(exc).__name__}: {exc}"
                    delay = min(FEED_RETRY_MAX_S, self.feed_retry_s * 2 ** min(self._feed_failures - 1, 10))
                    if self._feed_failures == 1:
                        log.exception("market feed failed; restarting in %.1fs", delay)
                        self.notify(Notice("feed_failed", "", f"market feed failed ({self.feed_error}); restarting"))
                    else:
                        log.warning("market feed failed again (%d in a row): %s; restarting in %.1fs",
                                    self._feed_failures, self.feed_error, delay)
                    if await self._sleep_unless_stopping(delay):
                        break
                    self.feed_restarts += 1
                else:
                    if not self.stopping.is_set():
                        self.feed_done.set()
                    break
        finally:
            try:  # never cut short: stop() cancels this task only outside a write, then waits for this one
                await self._store_pending()
            except Exception as exc:
                log.warning("the last %d candles fed were not stored (%s)", len(self._pending), exc)

    async def _feed_once(self) -> None:
        self._feed_started = asyncio.get_running_loop().time()
        source = self.source = await self._feed_source()
        self.feed_error = None  # running again
        speed = self.settings.feed_speed
        loop = asyncio.get_running_loop()
        started = last_store = loop.time()
        sent = 0
        fed = self._fed
        store_at = STORE_BATCH
        try:
            async for candle in source.stream():
                if self.stopping.is_set():
                    break
                key = (candle.symbol, candle.interval)
                if (last := fed.get(key)) is not None and candle.open_time <= last:
                    continue  # a restarted feed: the bots have this one already
                fed[key] = candle.open_time
                if self._feed_failures:
                    log.info("market feed running again")
                    self._feed_failures = 0
                if self.newest_candle is None or candle.open_time > self.newest_candle:
                    self.newest_candle = candle.open_time
                for bot in self.bots.values():
                    if bot.error is None:
                        bot.queue.put_nowait(candle)
                self._pending.append(candle)  # stored in batches: one transaction per burst, not per candle
                now = loop.time()
                if len(self._pending) >= store_at or now - last_store >= 1.0:
                    await self._store_pending()
                    # a store that failed (a full disk) is retried once a second, not at every candle
                    last_store, store_at = now, len(self._pending) + STORE_BATCH
                sent += 1
                if speed and (ahead := sent / speed - (loop.time() - started)) > 0.01:
                    await asyncio.sleep(ahead)  # paced in small batches: a sleep per candle is too coarse
        finally:
            with contextlib.suppress(Exception):
                await source.close()

    async def _store_pending(self) -> None:
        """The candles fed since the last write, in one transaction; kept for the next try while the database
        cannot take them (a full disk): the bots trade on regardless."""
        if not self._pending:
            return
        try:
            async with self._store_lock:
                await self.candles.upsert(self._pending)
        except DB_DOWN as exc:
            if not is_db_down(exc):
                raise
            log.warning("candles not stored (%s): %d kept for the next try", type(exc).__name__, len(self._pending))
            return
        self._pending = []

    async def _sleep_unless_stopping(self, seconds: float) -> bool:
        """Wait `seconds` or until stop(); True when stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        return self.stopping.is_set()

    def feed_state(self) -> str:
        if self.feed_task is None:
            return "off"
        if self.feed_done.is_set():
            return "done"
        if self.feed_error is not None:
            return "failed"
        if self.feed_task.done():
            return "stopped"
        return "not receiving" if self._silent() else "running"

    def _silent(self) -> bool:
        """A live feed that has heard nothing from Bybit for a while (offline, blocked, an outage)."""
        from core.market.bybit_feed import BybitFeed

        source = self.source
        return (isinstance(source, BybitFeed) and not source.receiving
                and asyncio.get_running_loop().time() - self._feed_started > FEED_SILENT_S)

    def refused_candles(self) -> dict[str, int]:
        """Candles refused as not sane (absurd values, not yet closed), per reason: by the live feed and on
        reads of the candle store."""
        from core.market.bybit_feed import BybitFeed

        counts = Counter(self.candles.refused)
        if isinstance(self.source, BybitFeed):
            counts.update(self.source.refused)
        return {reason.value: n for reason, n in sorted(counts.items(), key=lambda kv: kv[0].value)}

    def faults(self) -> list[str]:
        """What makes /health fail: a bot whose task died or whose trades wait in memory (nothing could store
        them: a full disk), a feed that is down."""
        out = []
        for bot in self.bots.values():
            if bot.ledger.fault is not None:
                out.append(f"bot {bot.id}: {bot.ledger.fault}")
            if bot.error is not None:
                out.append(f"bot {bot.id}: {bot.error}")
            elif bot.task is not None and bot.task.done() and not self.stopping.is_set():
                out.append(f"bot {bot.id}: stopped")
        state = self.feed_state()
        if state == "failed" or (state == "stopped" and not self.stopping.is_set()):
            out.append(f"feed: {self.feed_error or 'stopped'}")
        elif state == "not receiving":
            out.append(f"feed: no market data from Bybit for over {FEED_SILENT_S:.0f} s (no connection?)")
        return out

    async def refresh_funding(self, days: float = 3.0) -> int:
        """The newest funding settlements of every symbol traded here, from Bybit's public history into the
        database and the bots' schedule (live market data only: a replayed market brings its own)."""
        if self.settings.market_feed != "bybit":
            return 0
        from bot.cli_candles import backfill_funding
        from core.exchange.bybit_public import KlineClient

        store = FundingStore(self.db)
        client = KlineClient(self.settings.bybit_rest_url)
        now = _utc_now()
        added = 0
        try:
            for symbol in sorted(self._wanted()):
                newest = await store.newest(symbol)
                await backfill_funding(store, client, symbol, newest or now - timedelta(days=days), now)
                added += sum(self.funding.add(symbol, ms, rate) for ms, rate in await store.rows(symbol))
        finally:
            await asyncio.to_thread(client.close)
        return added

    # --- operator actions ---------------------------------------------------------------------------------
    def set_paused(self, bot_id: str, paused: bool) -> bool:
        bot = self.bots.get(bot_id)
        if bot is None:
            return False
        state = bot.trader.state
        state.paused = paused
        if not paused and state.halted:  # the operator accepted the drawdown: measure from here on
            state.resume()
        return True

    async def retrain(self, bot_id: str, strategy: str | None) -> RetrainQueued:
        """/retrain: answered at once. The training runs in the background, behind one already running; the
        gate's verdicts follow as a notice."""
        bot = self.bots[bot_id]
        queued = RetrainQueued(bot.scorer.request_retrain(strategy), bot.scorer.training())
        if queued.strategies and not self.stopping.is_set():
            self._background(self._retrain_and_tell(bot, queued.strategies))
        return queued

    async def retrain_due(self, bot_id: str) -> None:
        """The schedule's retrain: every strategy with enough new outcomes."""
        await self._retrain(self.bots[bot_id])

    async def _retrain_and_tell(self, bot: BotRuntime, names: list[str]) -> None:
        if not await self._retrain(bot):
            return
        verdicts = [v for v in map(bot.scorer.verdict, names) if v is not None]
        text = "; ".join(f"{v.strategy} v{v.version} {'promoted' if v.promoted else 'refused'}: {v.why}"
                         for v in verdicts)
        self.notify(Notice("retrain_done", bot.id, f"retrain done: {text or 'nothing trained'}"))

    async def _retrain(self, bot: BotRuntime) -> bool:
        """Train in the worker process (the loop keeps trading), one retrain per bot at a time; stop()
        abandons a retrain in progress. False when abandoned."""
        async with bot.retraining:
            if self.stopping.is_set():
                return False
            if self.pool is None:
                self.pool = ProcessPoolExecutor(max_workers=1)
            pool = self.pool
            if due := bot.scorer.due():
                log.info("bot %s: retrain started (%s)", bot.id, ", ".join(due))
            try:
                await bot.scorer.retrain_pending(pool, bot.store.registry)
            except asyncio.CancelledError:  # cancelled by stop() (or the schedule's own shutdown)
                if self.stopping.is_set():
                    log.info("bot %s: retrain abandoned, the desk is stopping", bot.id)
                raise
            except BrokenProcessPool:
                if self.pool is pool:  # the worker died: the next retrain starts a new one
                    self.pool = None
                    pool.shutdown(wait=False)
                if self.stopping.is_set():
                    log.info("bot %s: retrain abandoned, the desk is stopping", bot.id)
                    return False
                raise
        return True

    def engine(self, bot_id: str) -> Engine | None:
        bot = self.bots.get(bot_id)
        return bot.engine if bot else None

    def trader(self, bot_id: str) -> Trader | None:
        """The bot's trader once its state is restored (before, its figures would be the configured defaults)."""
        bot = self.bots.get(bot_id)
        return bot.trader if bot is not None and bot.ready else None

    def starting(self, bot_id: str) -> bool:
        bot = self.bots.get(bot_id)
        return bot is not None and not bot.ready

    async def close_positions(self, bot_id: str, symbol: str | None, actor: str,
                              trade_ids: list[str] | None = None) -> list[Closing]:
        """Manual exits: a reduce-only market close per open position (of one symbol, of the listed trades, or
        all), a pending entry withdrawn; a paper close fills at the next candle's open."""
        bot = self.bots.get(bot_id)
        if bot is None:
            return []
        async with bot.lock:
            closing = bot.trader.close_at_market(symbol, trade_ids)
            if bot.venue is not None:
                await self._settle(bot)
        return closing

    # --- stop ------------------------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop within the host's budget, cancelling nothing inside a database write: a retrain in progress is
        abandoned, the feed stops between two writes (its last batch written), then every bot ends its stream
        and saves its last batch and checkpoint: the state snapshot."""
        self.stopping.set()
        if self.pool is not None:
            _abandon(self.pool)
            self.pool = None
        await self._stop_feed()
        await self._drain_bots()
        for b in self.bots.values():
            b.ledger.log_held()  # trades nothing could store (a full disk): at least in the log
        side = [t for t in (self.lease_task, *self._tasks) if t is not None]
        if side:  # the heartbeat ends by itself once stopping; a halt being stored is one short write
            _, late = await asyncio.wait(side, timeout=SIDE_STOP_S)
            for task in late:
                task.cancel()
        if self.leases is not None:
            await self.leases.release_all()
        if self.instances is not None:
            with contextlib.suppress(*DB_DOWN):
                await self.instances.leave()
        if self.broker is not None:
            await self.broker.aclose()

    async def _stop_feed(self) -> None:
        task = self.feed_task
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(FEED_STOP_S):
                await self._store_lock.acquire()  # no write in progress, and none starts before the cancel
        except TimeoutError:
            log.error("the candle store has not answered for %.1fs: the feed is stopped mid-write", FEED_STOP_S)
            task.cancel()
        else:
            task.cancel()
            self._store_lock.release()
        _, late = await asyncio.wait([task], timeout=FEED_STOP_S)  # its last batch, written by the task itself
        if late:
            log.error("the feed's last batch was not stored within %.1fs: dropped", FEED_STOP_S)
            task.cancel()

    async def _drain_bots(self) -> None:
        """Each runner ends its stream and saves its last batch and checkpoint."""
        for bot in self.bots.values():
            self._end_stream(bot)
        await self._await_saved(list(self.bots.values()))
        for bot in self.bots.values():
            if bot.task is not None:
                log.info("bot %s: stopped after %d candles (unsaved: %d)", bot.id, bot.processed,
                         bot.processed - bot.saved)

    @staticmethod
    def _end_stream(bot: BotRuntime) -> None:
        """Candles still queued are dropped rather than waited for: the bot resumes from its checkpoint."""
        dropped = 0
        while not bot.queue.empty():
            bot.queue.get_nowait()
            dropped += 1
        if dropped:
            log.info("bot %s: %d queued candles left unprocessed", bot.id, dropped)
        bot.queue.put_nowait(None)
        for side in bot.side_tasks:
            side.cancel()
        if bot.venue is not None:
            bot.venue.stop_watching()  # no limit entry's timeout fires once the bot has stopped

    @staticmethod
    async def _await_saved(bots: list[BotRuntime]) -> None:
        tasks = [b.task for b in bots if b.task is not None and not b.task.done()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=BOT_DRAIN_S)
            for task in late:
                log.error("%s did not save its last batch within %.1fs: stopped, its previous checkpoint stands",
                          task.get_name(), BOT_DRAIN_S)
                task.cancel()


def _abandon(pool: ProcessPoolExecutor) -> None:
    """End the retrain worker now, whatever it is doing: the next start retrains. Python 3.11 has no public
    way to stop a running task (3.14 adds terminate_workers()), hence the private `_processes` table.
    SIGKILL: a forked worker inherits the host's asyncio signal handler, which ignores SIGTERM."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        process.kill()


@dataclass
class _Account:
    """A live bot as the recovery effects see it (core.recovery.Account)."""

    trader: Trader
    broker: Broker

    def now(self) -> datetime:
        return _utc_now()


def _utc_now() -> datetime:
    """The wall clock the exchange adapters need (the engine itself takes time from the candles)."""
    return datetime.now(UTC)


def _universe_notice(bot_id: str, universe: Universe, moved: UniverseChange, held: set[str]) -> Notice:
    parts = [f"universe of bot {bot_id}: {len(universe.symbols)} symbols"]
    if moved.added:
        parts.append("joined " + ", ".join(f"{s} ({m.describe()})" if (m := universe.member(s)) else s
                                           for s in moved.added))
    if moved.removed:
        kept = [s for s in moved.removed if s in held]
        parts.append("left " + ", ".join(moved.removed) + (
            f" (no new entries; open trades and phantoms on {', '.join(kept)} run to their end)" if kept else ""))
    if universe.unavailable:
        parts.append("included but not trading on Bybit: " + ", ".join(universe.unavailable))
    return Notice("universe", bot_id, "; ".join(parts),
                  {"added": list(moved.added), "removed": list(moved.removed), "held": sorted(held)})


def _trade_notice(bot_id: str, event: Any) -> Notice:
    kind: NoticeKind = "trade_open" if event.kind == "open" else "trade_close"
    return Notice(kind, bot_id, _trade_text(event), {"trade_id": event.trade.id})


def _trade_text(event: Any) -> str:
    t = event.trade
    if event.kind == "open":
        return f"opened {t.side} {t.symbol} {t.qty} @ {t.entry_price} (SL {t.stop_loss}, TP {t.take_profit})"
    return f"closed {t.side} {t.symbol} @ {t.exit_price} ({t.exit_reason}): net {t.net_pnl:+.2f} USDT"
