"""The Telegram operator interface through Dispatcher.feed_update with a recording session.

A real Desk over a real SQLite database filled by a short replay (bot "replay": trades, phantoms,
signals, two ML models), and a fake RuntimeView (one open BTCUSDT position, a warmed-up engine).
Every command: happy path, bad arguments (one line with the usage), admin vs viewer vs stranger;
button presses (confirm, second press, stranger press), splitting, HTML escaping, the webhook, the
409 conflict, the notifier, the console, and /stats' fast path against core.stats.summarize.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import pytest
from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest, TelegramConflictError, TelegramNetworkError, TelegramRetryAfter
from aiogram.methods import GetUpdates, SendMessage
from aiogram.types import CallbackQuery, Chat, Message, MessageEntity, Update, User
from sqlalchemy import select

from bot.settings import Settings
from bot.telegram import ConflictOnce, build_dispatcher, mount_webhook, start_polling
from bot.telegram import render as rd
from bot.telegram.auth import NOT_AUTHORIZED, AuthMiddleware
from bot.telegram.commands import COMMANDS, READ_ONLY
from bot.telegram.keyboards import Confirm, Recovery, Refresh, fits
from bot.telegram.notifier import ICONS, Notifier, seconds_until
from core.config import BotConfig
from core.decisions import Option
from core.desk import RISK_KEYS, Actor, BadArgument, Desk, JobStatus, RetrainQueued
from core.engine import Engine
from core.exchange.paper import PaperBroker
from core.instruments import Instruments
from core.ledger import LedgerEvent, TradeRecord
from core.lifecycle import TradeStatus
from core.market.candle import dt_to_ms
from core.market.replay import sort_key
from core.ml.registry import ModelArtifact
from core.ml.scorer import UNSCORED
from core.recovery import Effect, Item, perform
from core.risk import RiskState
from core.signal import Signal
from core.stats import summarize
from core.trader import Closing, Notice, NoticeKind, OpenTrade, Trader
from storage.bots import upsert_bot
from storage.candle_files import read_candle_dir
from storage.candle_store import CandleStore
from storage.db import create_engine
from storage.desk_store import SqlDeskStore
from storage.journal import Journal
from storage.ledger import SqlLedger
from storage.ml_registry import SqlModelRegistry
from storage.models import AuditLog, MLModel, RecoveryItem
from storage.models import Bot as BotRow
from storage.recovery import RecoveryBook
from tests.conftest import CANDLES
from tests.fakes.clock import wait_until
from tests.fakes.telegram import PNG_SIGNATURE, TOKEN, RecordingSession, photo_bytes
from tests.hostproc import ROOT, desk_env, run

ADMIN, VIEWER, STRANGER = 1001, 2002, 3003
ADMIN_ACTOR = Actor(ADMIN, "u1001", "admin")
DATA = CANDLES / "binance_spot_2020-12_2021-07"
NOW = datetime(2021, 3, 15, tzinfo=UTC)  # the end of the replay: "last 7 days" has trades


# --- the database, once per module --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def replay_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("replay")
    path = folder / "replay.db"
    done = run(["replay", "--data", str(DATA), "--from", "2021-03-01", "--to", "2021-03-15", "--db",
                f"sqlite:///{path}", "--json"], folder, desk_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (folder / "replay.json").write_text(done.stdout.strip().splitlines()[-1])
    conn = sqlite3.connect(path)  # its drawdown guard may have halted the bot: these tests start resumed
    # and the replay's record (mode replay, never traded by a desk) stands for a paper bot of the desk
    conn.execute("UPDATE bots SET status = 'running', status_reason = NULL, mode = 'paper'")
    conn.commit()
    conn.close()  # the last connection out writes the WAL back: the copies below see the change
    asyncio.run(_store_candles(f"sqlite+aiosqlite:///{path}"))
    asyncio.run(_store_challenger(f"sqlite+aiosqlite:///{path}"))
    return path


async def _store_challenger(url: str) -> None:
    """A trained trend_pullback challenger v999 the gate refused, in the registry (two weeks of candles hold too
    few outcomes for the filter to fit one): what /ml_stats, /chart calibration and "promote anyway" show."""
    import numpy as np

    from core.ml.dataset import N_FEATURES, Dataset
    from core.ml.evidence import EvidenceRule
    from core.ml.gate import retrain
    from core.ml.registry import ModelArtifact

    rng = np.random.default_rng(80)
    X = rng.normal(size=(300, N_FEATURES))
    y = (rng.random(300) < 1 / (1 + np.exp(-X[:, 0]))).astype(np.int8)
    t = np.arange(300, dtype=np.int64) * 3_600_000
    data = Dataset("trend_pullback", tuple(f"{i}" for i in range(300)), X, y, np.where(y == 1, 2.0, -1.0),
                   np.full(300, 2.0), np.ones(300, np.int8), t, t + 1_800_000)
    result = retrain(data, version=999, rule=EvidenceRule(always=True))
    assert result.artifact is not None
    report = {**result.report, "promoted": False, "why": "Brier worse than the champion's"}
    engine = create_engine(url)
    try:
        await SqlModelRegistry(engine, b"k" * 32).save(ModelArtifact("replay", "trend_pullback", 999, NOW, 300, report,
                                                                    result.artifact))
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def replayed(replay_db: Path) -> dict[str, Any]:
    """The replay's own summary: what the desk's views must show of it."""
    return json.loads((replay_db.parent / "replay.json").read_text())


async def _store_candles(url: str) -> None:
    """The replay's candles in the candle store (what the host's feed stores): charts and /analysis."""
    start, end = dt_to_ms(NOW - timedelta(days=15)), dt_to_ms(NOW)
    engine = create_engine(url)
    await CandleStore(engine).upsert([s.window(start, end) for s in read_candle_dir(DATA, ["BTCUSDT", "ETHUSDT"])])
    await engine.dispose()


@pytest.fixture
def desk_url(replay_db: Path, tmp_path: Path) -> str:
    copy = tmp_path / "desk.db"
    shutil.copy(replay_db, copy)
    return f"sqlite+aiosqlite:///{copy}"


# --- a runtime stand-in: a real Trader (one open position, paper venue), a real engine warmed on the candles --
def _trader() -> Trader:
    config = BotConfig(id="replay", symbols=["BTCUSDT", "ETHUSDT"])
    trader = Trader(config, Instruments(), PaperBroker(Instruments(), Decimal("10012.5")), mode="paper")
    trader.state = RiskState(Decimal(10000), Decimal(10500))
    trader.load_open([TradeRecord("t-open-1", "replay", "s-1", "BTCUSDT", "trend_pullback", "long", "open", "paper",
                                  Decimal("0.05"), Decimal(5), Decimal(50000), NOW - timedelta(hours=3),
                                  Decimal(49000), Decimal(52000))])
    return trader


@dataclass
class FakeRuntime:
    engine_: Engine
    db: Any  # the desk's AsyncEngine: a promotion is the registry's, as in the host
    trader_: Trader = field(default_factory=_trader)
    paused: dict[str, bool] = field(default_factory=dict)
    retrained: list[tuple[str, str | None]] = field(default_factory=list)
    resumed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def closed(self) -> list[str]:
        """Trades whose reduce-only close waits at the paper venue (it fills at the next candle's open)."""
        venue = self.trader_.broker
        assert isinstance(venue, PaperBroker)
        return [t.record.id for t in self.trader_.trades.values() if t.status == TradeStatus.CLOSING
                and (i := venue.pending.get(t.record.symbol)) is not None and i.reduce_only]

    def engine(self, bot_id: str) -> Engine | None:
        return self.engine_ if bot_id == "replay" else None

    def trader(self, bot_id: str) -> Any:
        return self.trader_ if bot_id == "replay" else None

    def starting(self, bot_id: str) -> bool:
        return False

    def universe(self, bot_id: str) -> None:
        return None  # the replay bot's symbols are a fixed list

    def set_paused(self, bot_id: str, paused: bool) -> bool:
        self.paused[bot_id] = paused
        return True

    async def retrain(self, bot_id: str, strategy: str | None) -> RetrainQueued:
        self.retrained.append((bot_id, strategy))
        return RetrainQueued([strategy] if strategy else ["trend_pullback", "mean_reversion", "scalp"], [])

    async def close_positions(self, bot_id: str, symbol: str | None, actor: str,
                              trade_ids: list[str] | None = None) -> list[Closing]:
        return self.trader_.close_at_market(symbol, trade_ids) if bot_id == "replay" else []

    # core.recovery ports: no live account here (paper), a halt and a model as the host does them
    async def act_on(self, item: Item, option: Option, actor: str) -> Effect:
        return await perform(item, option, self, actor)

    def account(self, bot_id: str) -> None:
        return None

    async def commit(self, bot_id: str) -> None:
        return None

    async def resume_halted(self, bot_id: str, actor: str) -> str:
        self.resumed.append((bot_id, actor))
        return f"bot {bot_id} trades again"

    async def promote_model(self, bot_id: str, strategy: str, version: int, actor: str) -> str:
        await SqlModelRegistry(self.db, b"k" * 32).set_champion(bot_id, strategy, version, actor=actor)
        return f"{strategy} v{version} is the champion"


async def _warm_engine(url: str, config: BotConfig) -> Engine:
    engine = Engine(config)
    store = CandleStore(create_engine(url))
    candles = []
    for symbol in config.symbols:
        for interval in config.intervals:
            candles += await store.history(symbol, interval, 400)
    for candle in sorted(candles, key=sort_key):
        engine.on_candle(candle)
    await store.engine.dispose()
    return engine


# --- the harness --------------------------------------------------------------------------------------------
@dataclass
class Harness:
    dp: Dispatcher
    bot: Bot
    session: RecordingSession
    desk: Desk
    runtime: FakeRuntime | None
    store: SqlDeskStore
    auth: AuthMiddleware
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def send(self, user_id: int, text: str) -> list[Any]:
        """Feed a private message; the calls it caused (messages, photos)."""
        self.session.clear()
        command = text.split()[0] if text.startswith("/") else ""
        message = Message(message_id=next(self.ids), date=datetime.now(UTC), text=text,
                          chat=Chat(id=user_id, type="private"),
                          from_user=User(id=user_id, is_bot=False, first_name=f"u{user_id}", username=f"u{user_id}"),
                          entities=[MessageEntity(type="bot_command", offset=0, length=len(command))]
                          if command else None)
        await self.dp.feed_update(self.bot, Update(update_id=next(self.ids), message=message))
        return self.session.sent()

    async def press(self, user_id: int, data: str) -> tuple[str | None, list[Any]]:
        """Feed a button press; (the answerCallbackQuery text, the edits it caused)."""
        self.session.clear()
        message = Message(message_id=77, date=datetime.now(UTC), text="-", chat=Chat(id=user_id, type="private"),
                          from_user=User(id=TOKEN_ID, is_bot=True, first_name="desk"))
        query = CallbackQuery(id=f"cb{next(self.ids)}", chat_instance="ci", data=data, message=message,
                              from_user=User(id=user_id, is_bot=False, first_name=f"u{user_id}"))
        await self.dp.feed_update(self.bot, Update(update_id=next(self.ids), callback_query=query))
        answers = self.session.named("answerCallbackQuery")
        assert len(answers) == 1, f"every press is answered exactly once: {[c.name for c in self.session.calls]}"
        return answers[0].method.text, self.session.named("editMessageText", "editMessageReplyMarkup")


TOKEN_ID = int(TOKEN.split(":")[0])


def _settings(tmp_path: Path, url: str, **extra: Any) -> Settings:
    return Settings(_env_file=None, database_url=url, data_dir=tmp_path, telegram_bot_token=TOKEN,  # type: ignore[call-arg]
                    telegram_admin_ids=(ADMIN,), telegram_viewer_ids=(VIEWER,), **extra)


@pytest.fixture
async def h(desk_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    engine = create_engine(desk_url)
    store = SqlDeskStore(engine)
    config = await store.bot_config("replay")
    assert config is not None
    runtime = FakeRuntime(await _warm_engine(desk_url, config), engine)

    async def health() -> dict[str, Any]:
        return {"status": "ok", "database": "ok", "bots": [{"id": "replay", "status": "running", "mode": "paper",
                                                            "open_trades": 1, "running_here": True}]}

    desk = Desk(store, runtime, clock=lambda: NOW, health_fn=health)
    session = RecordingSession()
    bot = Bot(TOKEN, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))
    dp = build_dispatcher(desk, _settings(tmp_path, desk_url))
    yield Harness(dp, bot, session, desk, runtime, store, dp["auth"])
    await engine.dispose()


# --- checks on what was sent --------------------------------------------------------------------------------
class _Balanced(HTMLParser):
    ALLOWED = frozenset({"b", "i", "u", "s", "code", "pre", "a", "tg-spoiler", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        assert tag in self.ALLOWED, f"Telegram rejects <{tag}>"
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> in {self.stack}"
        self.stack.pop()


def assert_valid_html(text: str) -> None:
    assert rd.units(text) <= rd.MESSAGE_LIMIT
    parser = _Balanced()
    parser.feed(text)
    parser.close()
    assert not parser.stack, f"unclosed {parser.stack}"
    assert not re.search(r"&(?!(amp|lt|gt|quot|#\d+);)", text), "a bare & would break HTML parse mode"


def texts(calls: list[Any]) -> list[str]:
    return [c.text for c in calls]


async def bot_status(store: SqlDeskStore) -> str:
    async with store.sessions() as session:
        row = await session.get(BotRow, "replay")
        assert row is not None
        return row.status


# --- every command, happy path ------------------------------------------------------------------------------
HAPPY = [
    ("/start", "phantomdesk"), ("/help", "/risk set KEY VALUE"), ("/bots", "replay"), ("/status", "BTCUSDT"),
    ("/status replay", "uPnL"), ("/balance", "10,012.50"), ("/stats", "Trades: <b>"), ("/stats 7", "last 7 days"),
    ("/stats 7 replay", "bot replay"), ("/stats replay 30", "last 30 days"), ("/daily", "Daily PnL"),
    ("/daily 14", "2021-03-14"), ("/recent", "Recent trades"), ("/recent 5", "last 5"),
    ("/performance", "by strategy"), ("/performance replay", "SOLUSDT"), ("/ml_stats", "ML filter"),
    ("/phantom_stats", "Phantoms"), ("/phantom_stats BTCUSDT", "BTCUSDT"), ("/db_stats", "candles"),
    ("/health", "refused telegram users"), ("/jobs", "job"), ("/risk", "risk_pct"), ("/risk replay", "max_leverage"),
    ("/recovery", "no recovery item"), ("/analysis BTCUSDT", "Analysis"), ("/retrain", "queued"),
    ("/retrain scalp", "queued"), ("/pause replay calm down", "paused"), ("/resume all", "running"),
    ("/risk set max_positions 4", "max_positions 5 → <b>4</b>"), ("/close BTCUSDT", "Close <b>1</b> position"),
    ("/chart equity", "equity"), ("/chart daily 30", "daily"), ("/chart winrate", "winrate"),
    ("/chart phantoms", "phantoms"), ("/chart calibration", "calibration"), ("/chart BTCUSDT", "BTCUSDT"),
    ("/chart ethusdt 3", "ETHUSDT"),
]


@pytest.mark.parametrize(("text", "expect"), HAPPY, ids=[t for t, _ in HAPPY])
async def test_every_command_as_admin(h: Harness, text: str, expect: str) -> None:
    sent = await h.send(ADMIN, text)
    assert sent, f"{text}: no reply"
    assert all(c.method.chat_id == ADMIN for c in sent)
    joined = "\n".join(texts(sent))
    assert "⚠️" not in joined.split("\n")[0] or "Close" in joined, joined
    assert expect in joined, joined[:800]
    for call in sent:
        assert_valid_html(call.text)
    if text.startswith("/chart"):
        assert sent[0].name == "sendPhoto"
        png = photo_bytes(sent[0])
        assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000


def test_help_lists_every_command_with_its_usage() -> None:
    assert {"start", "help", "bots", "status", "balance", "stats", "daily", "recent", "performance", "chart", "pause",
            "resume", "close", "retrain", "ml_stats", "phantom_stats", "db_stats", "health", "jobs", "risk",
            "recovery", "analysis", "universe"} == set(COMMANDS)


async def test_help_shows_every_usage(h: Harness) -> None:
    text = texts(await h.send(VIEWER, "/help"))[0]
    for command in COMMANDS.values():
        assert rd.esc(command.usage) in text


async def test_pause_and_resume_reach_database_and_runtime(h: Harness) -> None:
    await h.send(ADMIN, "/pause replay volatile")
    assert await bot_status(h.store) == "paused"
    assert h.runtime is not None and h.runtime.paused == {"replay": True}
    await h.send(ADMIN, "/resume replay")
    assert await bot_status(h.store) == "running"
    assert h.runtime.paused == {"replay": False}


# --- bad arguments: one line with the usage -----------------------------------------------------------------
BAD = ["/stats abc", "/stats 0", "/stats 7 8", "/stats 1 2 3", "/daily x", "/daily 999", "/recent 0", "/recent 1 2",
       "/chart", "/chart pie", "/chart equity x", "/chart DOGEUSDT", "/pause nobot", "/resume a b", "/close",
       "/close BTC", "/retrain magic", "/phantom_stats DOGEUSDT", "/phantom_stats x", "/risk set risk_pct 99",
       "/risk set nope 1", "/risk set risk_pct abc", "/risk set max_positions 2.5", "/risk set risk_pct",
       "/analysis", "/analysis DOGEUSDT", "/help me", "/status nobot", "/bots x", "/performance nobot",
       "/ml_stats x"]


@pytest.mark.parametrize("text", BAD)
async def test_bad_arguments_answer_one_line_with_usage(h: Harness, text: str) -> None:
    status_before = await bot_status(h.store)
    sent = await h.send(ADMIN, text)
    assert len(sent) == 1
    reply = sent[0].text
    assert "\n" not in reply and reply.startswith("⚠️")
    usage = COMMANDS[text.split()[0][1:]].usage
    assert f"usage: <code>{rd.esc(usage)}</code>" in reply
    assert await bot_status(h.store) == status_before


async def test_unknown_command(h: Harness) -> None:
    sent = await h.send(ADMIN, "/frobnicate now")
    assert len(sent) == 1 and "unknown command /frobnicate" in sent[0].text and "/help" in sent[0].text


# --- who may do what ----------------------------------------------------------------------------------------
READS = ["/start", "/help", "/bots", "/status", "/balance", "/stats 7", "/daily", "/recent", "/performance",
         "/ml_stats", "/phantom_stats", "/db_stats", "/health", "/jobs", "/risk", "/recovery", "/analysis BTCUSDT",
         "/chart equity"]
WRITES = ["/pause all", "/pause replay x", "/resume all", "/close all", "/close BTCUSDT", "/retrain",
          "/risk set risk_pct 2", "/risk set max_positions 4 replay"]


@pytest.mark.parametrize("text", READS)
async def test_viewer_reads(h: Harness, text: str) -> None:
    sent = await h.send(VIEWER, text)
    assert sent and READ_ONLY not in texts(sent) and NOT_AUTHORIZED not in texts(sent)


async def test_pause_all_asks_first_and_pauses_the_listed_bots(h: Harness) -> None:
    """A mass pause is a mass action: nothing changes before the button, which pauses exactly the listed bots."""
    async with h.store.sessions.begin() as session:
        await upsert_bot(session, BotConfig(id="second", name="second", symbols=["BTCUSDT"]))
    ask = (await h.send(ADMIN, "/pause all volatile"))[0]
    assert "Pause <b>2</b> bots: replay, second?" in ask.text and "reason: volatile" in ask.text
    assert await bot_status(h.store) == "running" and h.runtime is not None and not h.runtime.paused
    async with h.store.sessions.begin() as session:  # a bot created after the question is not in it
        await upsert_bot(session, BotConfig(id="third", name="third", symbols=["BTCUSDT"]))
    yes, _cancel = ask.callback_data
    answer, edits = await h.press(ADMIN, yes)
    assert answer == "paused 2" and "paused: <b>replay, second</b>" in edits[0].text
    statuses = {b.id: (b.status.status, b.status.reason) for b in await h.desk.bots()}
    assert statuses == {"replay": ("paused", "volatile"), "second": ("paused", "volatile"), "third": ("running", None)}
    assert h.runtime.paused == {"replay": True, "second": True}
    assert [r.actor for r in await _audit(h.store, "paused")][-2:] == ["tg:1001", "tg:1001"]
    assert (await h.press(ADMIN, yes))[0] == "already decided"


@pytest.mark.parametrize("text", WRITES)
async def test_viewer_cannot_change_anything(h: Harness, text: str) -> None:
    risk_before = await h.desk.risk("replay")
    sent = await h.send(VIEWER, text)
    assert texts(sent) == [READ_ONLY]
    assert await bot_status(h.store) == "running"
    assert h.runtime is not None and not h.runtime.paused and not h.runtime.closed and not h.runtime.retrained
    assert await h.desk.risk("replay") == risk_before


async def test_stranger_changes_nothing_and_hears_once_an_hour(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    h.auth.clock = lambda: clock[0]
    caplog.set_level(logging.WARNING, logger="bot.telegram.auth")
    assert texts(await h.send(STRANGER, "/pause all")) == [NOT_AUTHORIZED]
    for text in ["/pause all", "/stats", "hello", "/close all"]:
        assert await h.send(STRANGER, text) == []
    answer, edits = await h.press(STRANGER, Confirm(action="close", target="all", token="x").pack())
    assert answer is None and edits == []  # answered silently: the client stops spinning
    assert await bot_status(h.store) == "running"
    assert h.runtime is not None and not h.runtime.paused and not h.runtime.closed
    assert h.auth.refused_total == 6 and h.auth.refused[STRANGER] == 6
    refusals = [r for r in caplog.records if "refused user 3003" in r.getMessage()]
    assert len(refusals) == 6 and all(r.levelno == logging.WARNING for r in refusals)
    assert "calm" not in caplog.text  # what they typed is not logged
    clock[0] += 3601
    assert texts(await h.send(STRANGER, "/stats")) == [NOT_AUTHORIZED]
    assert (await h.send(ADMIN, "/health"))[0].text.count("refused telegram users: <b>7")


async def test_stranger_press_on_a_recovery_button_is_refused(h: Harness) -> None:
    item_id, _ = await h.store.recovery_book.raise_item("replay", "unknown_position", dedupe_key="k1",
                                                        details={"symbol": "BTCUSDT"}, options=["adopt", "ignore"])
    answer, _ = await h.press(STRANGER, Recovery(item_id=item_id, option="adopt").pack())
    assert answer == NOT_AUTHORIZED
    answer, _ = await h.press(VIEWER, Recovery(item_id=item_id, option="adopt").pack())
    assert answer == READ_ONLY
    assert [i["id"] for i in await h.desk.recovery()] == [item_id]  # still pending


# --- buttons ------------------------------------------------------------------------------------------------
async def _audit(store: SqlDeskStore, action: str = "button") -> list[AuditLog]:
    async with store.sessions() as session:
        return list((await session.scalars(select(AuditLog).where(AuditLog.action == action)
                                           .order_by(AuditLog.id))).all())


async def test_close_needs_the_confirmation_button(h: Harness) -> None:
    sent = await h.send(ADMIN, "/close BTCUSDT")
    assert h.runtime is not None and h.runtime.closed == []  # nothing happens before the press
    yes, cancel = sent[0].callback_data
    assert all(len(d.encode()) <= 64 for d in (yes, cancel))
    answer, edits = await h.press(ADMIN, yes)
    assert answer == "closing 1" and h.runtime.closed == ["t-open-1"]
    assert edits[0].name == "editMessageText" and "t-open-1" in edits[0].text and "close sent" in edits[0].text
    answer, edits = await h.press(ADMIN, yes)
    assert answer == "already decided" and h.runtime.closed == ["t-open-1"]
    answer, _ = await h.press(ADMIN, cancel)
    assert answer == "already decided"
    rows = await _audit(h.store)
    assert [r.actor for r in rows] == ["tg:1001"] * 3
    assert [r.details["outcome"] for r in rows] == ["closing 1", "already decided", "already decided"]


async def test_close_acts_on_exactly_what_it_listed(h: Harness) -> None:
    """/close all confirms the positions it lists; one that opens before the press is not closed, and a pending
    entry the operator can see is withdrawn (the paper venue drops its order)."""
    assert h.runtime is not None
    trader = h.runtime.trader_
    late = Signal("late" + "0" * 20, "replay", "ETHUSDT", "15", "trend_pullback", "long", Decimal(3000),
                  Decimal(2900), Decimal(3200), NOW)
    sent = await h.send(ADMIN, "/close all")
    assert "<b>1</b> position" in sent[0].text
    trader.trades["t-" + late.id] = OpenTrade(TradeRecord(
        "t-" + late.id, "replay", late.id, "ETHUSDT", "trend_pullback", "long", "open", "paper", Decimal(1),
        Decimal(1), Decimal(3000), NOW, Decimal(2900), Decimal(3200)), Decimal(2900), TradeStatus.OPEN)
    answer, edits = await h.press(ADMIN, sent[0].callback_data[0])
    assert answer == "closing 1" and h.runtime.closed == ["t-open-1"]
    assert trader.trades["t-" + late.id].status == TradeStatus.OPEN  # opened after the listing: untouched
    # a pending entry: listed with its state, withdrawn at once on the paper venue
    pending = Signal("pend" + "0" * 20, "replay", "ETHUSDT", "15", "scalp", "long", Decimal(3000), Decimal(2900),
                     Decimal(3200), NOW)
    del trader.trades["t-" + late.id]
    trader.state.paused = False
    assert trader.guard(pending, UNSCORED) is None, "the paper venue takes the entry"
    trader.on_decisions([SimpleNamespace(signal=pending, action="EXECUTED")])
    venue = trader.broker
    assert isinstance(venue, PaperBroker) and venue.pending["ETHUSDT"].order_link_id == f"pd-{pending.id}-o"
    sent = await h.send(ADMIN, "/close ETHUSDT")
    assert "pending" in sent[0].text
    answer, edits = await h.press(ADMIN, sent[0].callback_data[0])
    assert "entry cancelled" in edits[0].text
    assert "t-" + pending.id not in trader.trades and "ETHUSDT" not in venue.pending
    assert [e.status for e in trader.ended] == [TradeStatus.CANCELLED]


async def test_close_cancelled_and_expired(h: Harness) -> None:
    sent = await h.send(ADMIN, "/close all")
    yes, cancel = sent[0].callback_data
    answer, _ = await h.press(ADMIN, cancel)
    assert answer == "cancelled"
    assert (await h.press(ADMIN, yes))[0] == "already decided"
    confirmations = h.dp["confirmations"]
    confirmations.ttl = -1  # every new confirmation is born expired
    yes = (await h.send(ADMIN, "/close all"))[0].callback_data[0]
    assert (await h.press(ADMIN, yes))[0].startswith("expired")
    assert h.runtime is not None and h.runtime.closed == []


async def test_close_of_a_bot_another_replica_trades_says_so(h: Harness) -> None:
    """Not "nothing to close": this process cannot see the positions of a bot another replica holds."""
    async with h.store.sessions.begin() as session:
        await upsert_bot(session, BotConfig(id="remote", name="remote", symbols=["BTCUSDT"]))
    async with h.store.sessions.begin() as session:
        row = await session.get(BotRow, "remote")
        assert row is not None
        row.owner_instance, row.last_heartbeat = "replica-2", datetime.now(UTC)
    [reply] = await h.send(ADMIN, "/close all remote")
    assert "remote (traded by replica-2)" in reply.text and "nothing to close" not in reply.text
    assert not reply.callback_data  # no button: nothing here could act on it
    assert h.runtime is not None and h.runtime.closed == []
    [local] = await h.send(ADMIN, "/close all replay")  # a bot traded here lists its positions as before
    assert "Close <b>1</b> position" in local.text


async def test_forged_confirm_is_refused(h: Harness) -> None:
    assert (await h.press(ADMIN, Confirm(action="close", target="all", token="nope1234").pack()))[0] == \
        "already decided"
    assert (await h.press(ADMIN, "cf:garbage"))[0] == "unknown or outdated button"
    assert h.runtime is not None and h.runtime.closed == []


async def test_dangerous_risk_setting_needs_confirmation(h: Harness) -> None:
    sent = await h.send(ADMIN, "/risk set risk_pct 5")
    assert "danger level" in sent[0].text
    assert (await h.desk.risk("replay"))[0].settings["risk_pct"] == Decimal(1)
    answer, edits = await h.press(ADMIN, sent[0].callback_data[0])
    assert answer == "applied" and "risk_pct 1 → <b>5</b>" in edits[0].text
    assert (await h.desk.risk("replay"))[0].settings["risk_pct"] == Decimal(5)
    assert (await h.press(ADMIN, sent[0].callback_data[0]))[0] == "already decided"
    assert len(await _audit(h.store, "risk_set")) == 1


async def test_risk_ranges_are_the_bot_configs(h: Harness) -> None:
    """/risk set accepts exactly what a bot's configuration file may hold: one definition of each range."""
    base = (await h.store.bot_config("replay"))
    assert base is not None
    for key, spec in RISK_KEYS.items():
        step = Decimal(1) if spec.integer else Decimal("0.01")
        for value in (spec.low - step, spec.low, spec.low + step, spec.high, spec.high + step):
            try:
                BotConfig.model_validate({**base.model_dump(), key: value})
                config_ok = True
            except ValueError:
                config_ok = False
            try:
                await h.desk.risk_set(key, str(value), ADMIN_ACTOR, "replay", confirmed=True)
                desk_ok = True
            except BadArgument:
                desk_ok = False
            assert desk_ok == config_ok, (key, value)


async def test_recovery_decided_once(h: Harness) -> None:
    """The transport's part: only the item's options are buttons, a press decides once and is audited with the
    user id, the effect is recorded on the item. (What each effect does at the exchange: tests/e2e/
    test_recovery_effects.py; this bot is not traded live here, so the exchange effect is queued.)"""
    book = RecoveryBook(h.store.db)
    item_id, _ = await book.raise_item("replay", "unknown_position", dedupe_key="pos:BTC",
                                       details={"symbol": "BTCUSDT", "qty": "0.1", "note": "<script>"},
                                       options=["adopt", "close_at_market", "ignore"])
    sent = await h.send(ADMIN, "/recovery")
    assert len(sent) == 1 and f"recovery #{item_id}" in sent[0].text and "&lt;script&gt;" in sent[0].text
    data = sent[0].callback_data
    assert data == [f"rv:{item_id}:adopt", f"rv:{item_id}:close_at_market", f"rv:{item_id}:ignore"]
    answer, edits = await h.press(ADMIN, data[0])
    assert answer == "adopt: queued"
    answer, edits = await h.press(ADMIN, data[1])
    assert answer == "already decided (approved)"
    assert [e.name for e in edits] == ["editMessageReplyMarkup"]  # the stale buttons go away
    async with h.store.sessions() as session:
        item = await session.get(RecoveryItem, item_id)
        assert item is not None and (item.status, item.decision, item.decided_by) == ("approved", "adopt", ADMIN)
        assert item.effect is not None and item.effect["state"] == "queued"
    assert [r.details["outcome"] for r in await _audit(h.store)] == ["adopt: queued", "already decided (approved)"]
    effects = await _audit(h.store, "recovery_effect:unknown_position")
    assert [(r.actor, r.details["state"]) for r in effects] == [("tg:1001", "queued")]
    assert (await h.send(ADMIN, "/recovery"))[0].text == "✅ no recovery item is waiting"
    assert (await h.press(ADMIN, Recovery(item_id=item_id, option="reject").pack()))[0].startswith("already decided")


async def test_expired_recovery_item(h: Harness) -> None:
    book = RecoveryBook(h.store.db)
    item_id, _ = await book.raise_item("replay", "unknown_position", dedupe_key="old", details={}, options=["adopt"],
                                       ttl=timedelta(seconds=1), now=datetime.now(UTC) - timedelta(hours=1))
    assert (await h.press(ADMIN, Recovery(item_id=item_id, option="adopt").pack()))[0] == "already decided (expired)"
    assert (await h.press(ADMIN, Recovery(item_id=999, option="adopt").pack()))[0] == "already decided (unknown)"


async def test_drawdown_halt_resume_button(h: Harness) -> None:
    """The halt's "resume" is performed after the item is decided, exactly once; "reject" is not an option."""
    item_id, _ = await RecoveryBook(h.store.db).raise_item("replay", "drawdown_halt", dedupe_key="dd", details={},
                                                           options=["resume", "keep_halted"], critical=False)
    assert (await h.press(ADMIN, Recovery(item_id=item_id, option="reject").pack()))[0] == \
        "'reject' is not an option of this item"
    answer, edits = await h.press(ADMIN, Recovery(item_id=item_id, option="resume").pack())
    assert answer == "resume: done" and "trades again" in edits[0].text
    await h.press(ADMIN, Recovery(item_id=item_id, option="resume").pack())
    assert h.runtime is not None and h.runtime.resumed == [("replay", "tg:1001")]


async def test_promote_anyway(h: Harness) -> None:
    registry = SqlModelRegistry(h.store.db, b"k" * 32)
    await registry.record_refusal("replay", "trend_pullback", 999, {"why": "Brier worse than the champion's"})
    sent = await h.send(ADMIN, "/ml_stats")
    assert "refused by the gate" in sent[0].text
    promote = [d for d in sent[0].callback_data if d.startswith("pm:")]
    assert promote == ["pm:replay:trend_pullback:999"]
    answer, edits = await h.press(ADMIN, promote[0])
    assert answer == "promote: done"
    assert "trend_pullback v999 is the champion" in edits[0].text
    async with h.store.sessions() as session:
        champion = await session.scalar(select(MLModel.version).where(MLModel.is_champion.is_(True)))
    assert champion == 999
    assert (await h.press(ADMIN, promote[0]))[0] == "already decided (decided)"
    assert "v999" in (await h.send(ADMIN, "/ml_stats"))[0].text


async def test_refresh_button_edits_the_message(h: Harness) -> None:
    sent = await h.send(VIEWER, "/stats 7")
    refresh = [d for d in sent[0].callback_data if d.startswith("rf:")]
    assert refresh == ["rf:stats:7"]
    answer, edits = await h.press(VIEWER, refresh[0])
    assert answer == "refreshed" and edits[0].name == "editMessageText" and "last 7 days" in edits[0].text
    assert edits[0].callback_data == refresh
    h.session.fail["editMessageText"] = [TelegramBadRequest(SendMessage(chat_id=1, text="-"),
                                                            "message is not modified")]
    assert (await h.press(VIEWER, refresh[0]))[0] == "refreshed"  # nothing new: no error


async def test_forged_refresh_cannot_act(h: Harness) -> None:
    for data in ("rf:pause:all", "rf:close:all", "rf:retrain:", "rf:risk:set risk_pct 9"):
        assert (await h.press(ADMIN, data))[0] == "unknown or outdated button"
    assert await bot_status(h.store) == "running"
    assert h.runtime is not None and not h.runtime.paused and not h.runtime.closed and not h.runtime.retrained


def test_callback_data_fits_64_bytes() -> None:
    assert fits(Recovery(item_id=2**62, option="close_at_market"))
    assert fits(Confirm(action="risk", target="daily_loss_limit_pct=12.5", token="abcdefgh"))
    assert fits(Refresh(view="phantom_stats", args="BTCUSDT"))
    assert not fits(Refresh(view="stats", args="x" * 80))


# --- rendering ----------------------------------------------------------------------------------------------
async def test_long_output_is_split_under_4096(h: Harness, replayed: dict[str, Any]) -> None:
    sent = await h.send(ADMIN, "/recent 100")
    assert len(sent) >= 2
    for call in sent:
        assert_valid_html(call.text)
    assert sum(t.count("\n") for t in texts(sent)) >= min(100, replayed["trades_closed"])


def test_split_keeps_tags_and_lines() -> None:
    table = rd.table([[f"row{i}", "x" * 50, i] for i in range(400)], ["name", "pad", "n"])
    text = rd.title("Long") + "\n" + table + "\ntail & more".replace("&", "&amp;")
    chunks = rd.split(text)
    assert len(chunks) > 3
    for chunk in chunks:
        assert_valid_html(chunk)
    assert rd.plain("".join(chunks)).count("row") == 400
    long_line = "&amp;" * 5000  # one line over the limit: cut, never inside an entity
    for chunk in rd.split(long_line):
        assert_valid_html(chunk)
        assert chunk.startswith("&amp;") and chunk.endswith("&amp;")
    emoji = "🚀" * 3000  # two UTF-16 units each
    assert all(rd.units(c) <= rd.SAFE_LIMIT for c in rd.split(emoji))


async def test_user_text_is_escaped(h: Harness) -> None:
    sent = await h.send(ADMIN, "/pause replay <b>bold</b> & co")
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in sent[0].text
    assert_valid_html(sent[0].text)
    async with h.store.sessions() as session:
        row = await session.get(BotRow, "replay")
        assert row is not None and row.status_reason == "<b>bold</b> & co"
    bots = (await h.send(VIEWER, "/bots"))[0].text
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in bots
    assert_valid_html(bots)


# --- webhook, polling conflict ------------------------------------------------------------------------------
async def test_webhook_checks_the_secret(h: Harness, tmp_path: Path, desk_url: str) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    settings = _settings(tmp_path, desk_url, telegram_webhook_url="https://desk.example.com",
                         telegram_webhook_secret="s3cret-token")
    app = web.Application()
    mount_webhook(app, h.dp, h.bot, settings)
    update = {"update_id": 5, "message": {"message_id": 1, "date": 1700000000, "text": "/stats",
                                          "chat": {"id": ADMIN, "type": "private"},
                                          "from": {"id": ADMIN, "is_bot": False, "first_name": "a"}}}
    async with TestClient(TestServer(app)) as client:
        wrong = await client.post("/telegram/webhook", json=update,
                                  headers={"X-Telegram-Bot-Api-Secret-Token": "nope"})
        assert wrong.status == 401
        assert h.session.sent() == []
        right = await client.post("/telegram/webhook", json=update,
                                  headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"})
        assert right.status == 200
        # the handler runs in the background of the webhook reply
        await wait_until(lambda: any("Trades" in c.text for c in h.session.sent()), "the /stats reply")


async def test_polling_conflict_is_reported_once(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    conflict = TelegramConflictError(GetUpdates(), "Conflict: terminated by other getUpdates request")
    h.session.fail["getUpdates"] = [conflict] * 8
    h.session.middleware(ConflictOnce(pause_s=0.01))
    task = asyncio.create_task(start_polling(h.dp, h.bot))
    for _ in range(200):
        await asyncio.sleep(0.02)
        if not h.session.fail["getUpdates"] and len(h.session.named("getUpdates")) > 9:
            break
    await h.dp.stop_polling()
    await asyncio.wait_for(task, 5)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("getUpdates conflict (409" in m for m in messages) == 1
    assert not any("Failed to fetch updates" in m for m in messages)
    assert sum("conflict is over" in m for m in messages) == 1
    assert h.session.named("deleteWebhook") and h.session.named("setMyCommands")


# --- the notifier -------------------------------------------------------------------------------------------
def _notifier(session: RecordingSession, chats: list[int] | None = None, **kw: Any) -> Notifier:
    bot = Bot(TOKEN, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))
    kw.setdefault("min_interval_s", 0.0)
    kw.setdefault("backoff_s", 0.01)
    return Notifier(bot, chats or [ADMIN], **kw)


async def _drain(notifier: Notifier, session: RecordingSession, n: int, wait_s: float = 5.0) -> None:
    for _ in range(int(wait_s / 0.01)):
        if len(session.named("sendMessage")) >= n:
            break
        await asyncio.sleep(0.01)
    await notifier.stop()


def test_every_notice_kind_has_its_icon() -> None:
    assert set(ICONS) == set(get_args(NoticeKind))


async def test_notifier_sends_to_every_admin_and_escapes() -> None:
    session = RecordingSession()
    notifier = _notifier(session, [ADMIN, 4004])
    notifier.start()
    notifier.notify(Notice("trade_open", "main", "opened long BTCUSDT <1> & co"))
    await _drain(notifier, session, 2)
    sent = session.named("sendMessage")
    assert sorted(c.method.chat_id for c in sent) == [ADMIN, 4004]
    assert all("opened long BTCUSDT &lt;1&gt; &amp; co" in c.text for c in sent)


async def test_notifier_retries_flood_control_and_network_errors() -> None:
    session = RecordingSession()
    method = SendMessage(chat_id=ADMIN, text="-")
    session.fail["sendMessage"] = [TelegramRetryAfter(method, "flood", retry_after=1),
                                   TelegramNetworkError(method, "reset"), TelegramNetworkError(method, "reset")]
    notifier = _notifier(session)
    notifier.start()
    started = asyncio.get_running_loop().time()
    notifier.notify(Notice("drawdown_halt", "main", "halted: drawdown 21%"))
    await _drain(notifier, session, 4)
    assert len(session.named("sendMessage")) == 4 and notifier.sent == 1 and notifier.dropped == 0
    assert asyncio.get_running_loop().time() - started >= 1.0  # waited what Telegram asked


async def test_notifier_gives_up_after_the_last_attempt(caplog: pytest.LogCaptureFixture) -> None:
    session = RecordingSession()
    method = SendMessage(chat_id=ADMIN, text="-")
    session.fail["sendMessage"] = [TelegramNetworkError(method, "down")] * 5 + [
        TelegramBadRequest(method, "chat not found")]
    notifier = _notifier(session, attempts=5)
    notifier.start()
    for number, text in enumerate(["one", "two"], start=1):
        notifier.notify(Notice("bot_failed", "main", text))
        for _ in range(300):
            if notifier.dropped == number:
                break
            await asyncio.sleep(0.01)
    await notifier.stop()
    assert notifier.dropped == 2 and notifier.sent == 0
    assert len(session.named("sendMessage")) == 6  # 5 attempts, then a refusal is not retried
    assert "gave up" in caplog.text and "refused a message" in caplog.text


async def test_notify_never_blocks_and_merges_backlog() -> None:
    session = RecordingSession()
    session.delay = 0.05  # a slow Telegram
    notifier = _notifier(session, min_interval_s=0.2, queue_size=500)
    notifier.start()
    started = asyncio.get_running_loop().time()
    for i in range(300):
        notifier.notify(Notice("trade_close", "main", f"closed trade {i}"))
    assert asyncio.get_running_loop().time() - started < 0.05  # enqueue only
    await asyncio.sleep(0.6)
    await notifier.stop()
    sent = session.named("sendMessage")
    assert 1 < len(sent) < 10  # merged, not 300 messages
    joined = "\n".join(texts(sent))
    assert all(f"closed trade {i}\n" in joined + "\n" for i in range(300))
    assert all(rd.units(t) <= rd.MESSAGE_LIMIT for t in texts(sent))


async def test_notifier_dedupes_repeated_halts_and_full_queue_drops() -> None:
    session = RecordingSession()
    notifier = _notifier(session, queue_size=2)
    for _ in range(5):
        notifier.notify(Notice("breaker", "main", "win-rate breaker: scalp 20% < 25%"))
    notifier.notify(Notice("trade_open", "main", "a"))
    notifier.notify(Notice("trade_open", "main", "b"))
    assert notifier.queues[ADMIN].qsize() == 2 and notifier.dropped == 1
    notifier.start()
    await _drain(notifier, session, 1)
    assert texts(session.named("sendMessage")) == ["⚡ <b>main</b> · win-rate breaker: scalp 20% &lt; 25%\n"
                                                   "🟢 <b>main</b> · a"]


async def test_notifier_announces_recovery_items_with_buttons_and_daily_report(h: Harness,
                                                                                  replayed: dict[str, Any]) -> None:
    session = RecordingSession()
    notifier = _notifier(session, desk=h.desk, daily_at="07:30")
    item_id, _ = await RecoveryBook(h.store.db).raise_item("replay", "unknown_position", dedupe_key="a", details={},
                                                           options=["adopt"])
    assert await notifier.announce_recovery() == 1
    assert await notifier.announce_recovery() == 0
    # the gate's verdicts of the day: a refusal that measured better asks, one that measured worse informs
    registry = SqlModelRegistry(h.store.db, b"k" * 32)
    champion = {"brier": 0.24, "lift_r": 0.0}
    for strategy, challenger in (("better", {"brier": 0.22, "lift_r": 0.12}), ("worse", {"brier": 0.26,
                                                                                         "lift_r": -0.05})):
        await registry.save(ModelArtifact("replay", strategy, 900, NOW - timedelta(hours=2), 300, {
            "promoted": False, "why": f"{strategy}: not enough evidence yet", "challenger": challenger,
            "champion": champion}, b"-"))
    text = await notifier.daily_report()
    assert "Daily report" in text and f"{replayed['trades_closed']} trades" in text
    assert "replay better v900 refused: better: not enough evidence yet · promote anyway? see /recovery" in text
    assert "replay worse v900 refused: worse: not enough evidence yet\n" in text + "\n"
    notifier.start()
    await _drain(notifier, session, 2)
    sent = session.named("sendMessage")
    assert f"recovery #{item_id}" in sent[0].text and sent[0].callback_data == [f"rv:{item_id}:adopt"]
    assert "Daily report" in sent[1].text
    # delivered once: marked in the database, so the next process (a restart) does not send it again
    row = await RecoveryBook(h.store.db).get(item_id)
    assert row is not None and row.announced_at is not None
    restarted = _notifier(RecordingSession(), desk=h.desk)
    assert await restarted.announce_recovery() == 0
    assert seconds_until(datetime.strptime("07:30", "%H:%M").time(), datetime(2026, 1, 1, 7, 31, tzinfo=UTC)) == \
        24 * 3600 - 60


# --- the console --------------------------------------------------------------------------------------------
def test_console_runs_the_same_commands(desk_url: str, tmp_path: Path, replayed: dict[str, Any]) -> None:
    db = desk_url.replace("sqlite+aiosqlite:///", "sqlite:///")
    lines = "/stats\nbots\n/pause replay console test\n/risk set risk_pct 5\nyes\n/stats nope\n/chart equity\n"
    done = subprocess.run([sys.executable, "-m", "bot", "console", "--db", db], input=lines, capture_output=True,
                          text=True, cwd=tmp_path, env=desk_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    won = round(replayed["win_rate"] * replayed["trades_closed"])
    assert f"Trades: {replayed['trades_closed']} ({won} won, {replayed['trades_closed'] - won} lost)" in out
    assert "paused: replay — reason: console test" in out
    assert "replay: risk_pct 1 → 5" in out
    assert "⚠️ no bot 'nope' (bots: replay) — usage: /stats [days] [bot]" in out
    assert "<b>" not in out
    charts = list((tmp_path / "var" / "charts").glob("*equity.png"))
    assert charts and charts[0].read_bytes().startswith(PNG_SIGNATURE)

    async def check() -> None:
        engine = create_engine(desk_url)
        store = SqlDeskStore(engine)
        assert await bot_status(store) == "paused"
        rows = await _audit(store, "paused")
        assert rows[-1].actor == "console"
        await engine.dispose()

    asyncio.run(check())


def test_console_is_registered() -> None:
    from bot.__main__ import build_parser

    assert build_parser().parse_args(["console", "--db", "sqlite:///x.db"]).db == "sqlite:///x.db"
    assert (ROOT / "bot" / "console.py").exists()


# --- /stats' fast path equals core.stats.summarize ----------------------------------------------------------
def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, float) and y is not None:
            assert y == pytest.approx(x, rel=1e-9, abs=1e-9), key
        else:
            assert x == y, key


async def _compare(store: SqlDeskStore, bot_id: str | None, since: datetime | None = None) -> None:
    _same(summarize(await store.facts(bot_id, since), Decimal(10_000)),
          await store.summary(bot_id, since, Decimal(10_000)))


async def test_summary_equals_summarize_and_follows_new_trades(desk_url: str, tmp_path: Path) -> None:
    engine = create_engine(desk_url)
    store = SqlDeskStore(engine)
    for bot_id, since in [("replay", None), (None, None), ("replay", NOW - timedelta(days=5)), ("nobody", None)]:
        await _compare(store, bot_id, since)
    reloads = store.closed.reloads
    await _compare(store, "replay")
    assert store.closed.reloads == reloads  # unchanged table: served from memory

    ledger = SqlLedger(engine, Journal(tmp_path / "j.jsonl"))

    async def close(trade_id: str, exit_time: datetime, pnl: str) -> None:
        t = TradeRecord(trade_id, "replay", None, "BTCUSDT", "scalp", "long", "closed", "paper", Decimal(1),
                        Decimal(1), Decimal(100), exit_time - timedelta(hours=1), None, None, Decimal(101), exit_time,
                        "tp", Decimal("0.1"), Decimal(pnl), Decimal(pnl), 0.1, 1.0)
        await ledger.record(LedgerEvent("close", t))

    await close("zz-new", NOW, "500")  # newer than everything: fetched by the watermark
    await _compare(store, "replay")
    assert store.closed.reloads == reloads
    await close("aa-old", NOW - timedelta(days=10), "-900")  # older: the count does not add up -> reload
    await _compare(store, "replay")
    await _compare(store, None)
    assert store.closed.reloads > reloads
    await engine.dispose()


async def test_summary_on_postgres(pg_url: str, replay_db: Path, replayed: dict[str, Any]) -> None:
    from storage.migrations import upgrade

    await asyncio.to_thread(upgrade, pg_url)
    engine = create_engine(pg_url)
    src = create_engine(f"sqlite+aiosqlite:///{replay_db}")
    ledger = SqlLedger(engine, Journal(replay_db.parent / f"pg-{id(engine)}.jsonl"))
    from storage.bots import upsert_bot
    from storage.db import session_factory
    from storage.ledger import SqlLedger as SrcLedger

    async with session_factory(engine).begin() as session:
        config = await SqlDeskStore(src).bot_config("replay")
        assert config is not None
        await upsert_bot(session, config)
    for t in await SrcLedger(src, Journal(replay_db.parent / "src.jsonl")).closed_trades("replay"):
        await ledger.record(LedgerEvent("close", t))
    store = SqlDeskStore(engine)
    await _compare(store, "replay")
    await _compare(store, None, NOW - timedelta(days=3))
    assert (await store.summary("replay", None, Decimal(10_000)))["trades"] == replayed["trades_closed"]
    await src.dispose()
    await engine.dispose()


# --- generated bad input (hypothesis) -------------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402 - the fuzz section of this module
from hypothesis import strategies as st  # noqa: E402

TG_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
words = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30) | st.sampled_from(
    ["all", "replay", "BTCUSDT", "-1", "0", "99999999999", "1e9", "nan", "<b>x</b>", "&amp;", "set", "risk_pct",
     "max_leverage", "equity", "7", "🙂" * 50, "x" * 5000])


async def _db_state(h: Harness) -> tuple[Any, ...]:
    async with h.store.sessions() as session:
        status = (await session.execute(select(BotRow.status, BotRow.status_reason, BotRow.risk_pct))).all()
        audit = len((await session.execute(select(AuditLog.id))).all())
    return tuple(status), audit


@TG_FUZZ
@given(command=st.sampled_from(sorted(COMMANDS)), args=st.lists(words, max_size=4),
       user=st.sampled_from([VIEWER, STRANGER]))
async def test_fuzz_command_arguments_from_non_admins(h: Harness, command: str, args: list[str], user: int) -> None:
    """Any arguments to any command from a viewer or a stranger: answered (or not, for strangers) within the
    limits, and nothing changes — not the bot, not the runtime, not the audit log."""
    before = await _db_state(h)
    sent = await h.send(user, " ".join([f"/{command}", *args])[:4096])
    for call in sent:
        text = getattr(call.method, "text", None) or getattr(call.method, "caption", None) or ""
        assert len(text) <= 4096
    assert await _db_state(h) == before
    assert h.runtime is not None and not h.runtime.paused and not h.runtime.closed and not h.runtime.retrained


@TG_FUZZ
@given(command=st.sampled_from(sorted(COMMANDS)), args=st.lists(words, max_size=4))
async def test_fuzz_command_arguments_from_an_admin(h: Harness, command: str, args: list[str]) -> None:
    """An admin's bad arguments get a reply (a one-line error or the answer), never an exception; /close
    and dangerous /risk values still need their button, so nothing closes here."""
    sent = await h.send(ADMIN, " ".join([f"/{command}", *args])[:4096])
    assert sent, "every admin command gets an answer"
    for call in sent:
        text = getattr(call.method, "text", None) or getattr(call.method, "caption", None) or ""
        assert len(text) <= 4096
    assert h.runtime is not None and not h.runtime.closed


callback_data = st.text(max_size=64) | st.builds(
    lambda prefix, parts: ":".join([prefix, *parts])[:64],
    st.sampled_from(["cf", "rc", "pr", "rf", "confirm", "recovery", "x"]), st.lists(words, max_size=4))


@TG_FUZZ
@given(data=callback_data, user=st.sampled_from([ADMIN, VIEWER, STRANGER]))
async def test_fuzz_callback_data(h: Harness, data: str, user: int) -> None:
    """Forged or garbled button data from anyone: answered exactly once (the harness checks), and only an
    admin's valid, current press could ever act — random data never does."""
    before = await _db_state(h)
    await h.press(user, data)
    status_before, audit_before = before
    status_after, audit_after = await _db_state(h)
    assert status_after == status_before
    assert h.runtime is not None and not h.runtime.closed and not h.runtime.paused
    assert audit_after - audit_before <= 1  # at most the audit line of the press itself


async def test_jobs_tell_a_next_run_from_a_last_run(h: Harness) -> None:
    """A job that never ran says so; its next run is not shown as when it started."""
    later, earlier = datetime(2026, 12, 1, 0, 40, tzinfo=UTC), datetime(2026, 11, 30, 5, 0, tzinfo=UTC)

    async def listing() -> list[JobStatus]:
        return [JobStatus("backup", None, None, later, None), JobStatus("heartbeat", "ok", earlier, later, None)]

    h.desk.jobs_fn = listing
    [reply] = await h.send(ADMIN, "/jobs")
    lines = {line.split()[0]: line for line in reply.text.splitlines() if line.startswith(("backup", "heartbeat"))}
    assert "last run (UTC)" in reply.text and "next run (UTC)" in reply.text
    assert "not run yet" in lines["backup"] and " – " in lines["backup"] and "12-01 00:40" in lines["backup"]
    assert "11-30 05:00" in lines["heartbeat"] and "12-01 00:40" in lines["heartbeat"]
