"""Issue 18's acceptance for the universe: a paper bot on "top 20 by turnover, exclude S03USDT" in the host's
runtime, against the fake Bybit's tickers and public stream through the real pybit client.

It subscribes exactly those 20; the fake then changes turnovers and lists a new symbol; at the next run of the
scheduled refresh one symbol leaves (its open trade still closes normally: the ledger's rows say so) and the new
one joins (subscribed on the fake, its indicators warmed on its REST history), on the same connection. /universe
over the fake Telegram Bot API shows the new set; the symbol that left is unsubscribed once nothing is open on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from bot.runtime import Runtime
from bot.settings import Settings, load_settings
from bot.telegram import build_bot, build_dispatcher, start_polling
from core.config import BotConfig
from core.desk import Desk
from core.market.candle import Candle
from core.ml.scorer import UNSCORED
from core.signal import Signal
from core.trader import Notice
from jobs.desk_jobs import DeskJobs
from storage import migrations
from storage.bots import upsert_bot
from storage.db import create_engine, session_factory
from storage.desk_store import SqlDeskStore
from storage.models import Trade
from tests.fakes.bybit import FakeBybit
from tests.fakes.clock import wait_until
from tests.fakes.telegram import TOKEN, FakeBotAPI

ADMIN = 4242
SYMBOLS = [f"S{i:02d}USDT" for i in range(25)]  # S00 has the highest turnover, S24 the lowest
LEAVING, NEW, EXCLUDED = "S20USDT", "NEWUSDT", "S03USDT"
INTERVALS = ("15", "5")


def topics(symbols: list[str] | set[str]) -> set[str]:
    return {f"kline.{i}.{s}" for s in symbols for i in INTERVALS}


@pytest.fixture
def fake() -> Iterator[FakeBybit]:
    with FakeBybit(lambda: datetime.now(UTC)) as server:
        for rank, symbol in enumerate(SYMBOLS):
            server.list_symbol(symbol, turnover=(100 - rank) * 1_000_000, price="100")
        yield server


@pytest.fixture
def api() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as server:
        yield server


def _candle(symbol: str, open_time: datetime, *, high: float = 100.8, low: float = 99.6) -> Candle:
    return Candle(symbol, "5", open_time, 100.0, high, low, 100.4, 1000.0, 100_400.0)


async def _trades(db: Any, symbol: str) -> list[Trade]:
    async with session_factory(db)() as session:
        return list((await session.scalars(select(Trade).where(Trade.symbol == symbol))).all())


def _settings(tmp_path: Path, url: str, fake: FakeBybit, api: FakeBotAPI) -> Settings:
    return load_settings(database_url=url, data_dir=tmp_path / "var", market_feed="bybit", bybit_rest_url=fake.url,
                         bybit_public_ws_url=fake.ws_url, universe_refresh_s=600, telegram_bot_token=TOKEN,
                         telegram_api_server=api.url, telegram_admin_ids=str(ADMIN), secret_key="k" * 40)


async def test_a_universe_follows_the_market(fake: FakeBybit, api: FakeBotAPI, tmp_path: Path,
                                             sqlite_url: str) -> None:
    settings = _settings(tmp_path, sqlite_url, fake, api)
    await asyncio.to_thread(migrations.upgrade, settings.database_url)
    db = create_engine(settings.database_url, null_pool=True)
    async with session_factory(db).begin() as session:
        await upsert_bot(session, BotConfig.model_validate(
            {"id": "uni", "symbols": {"top": 20, "exclude": [EXCLUDED]}}))
    notices: list[Notice] = []
    runtime = Runtime(settings, db, None, notices.append)
    host = SimpleNamespace(settings=settings, db=db, runtime=runtime, notify=notices.append, redis=None)
    refresh = next(spec for spec in DeskJobs(host).specs() if spec.id == "universe_refresh")  # type: ignore[arg-type]
    desk = Desk(SqlDeskStore(db), runtime, clock=lambda: datetime.now(UTC))
    bot_api = build_bot(settings)
    dp = build_dispatcher(desk, settings)
    polling = asyncio.create_task(start_polling(dp, bot_api))
    try:
        await runtime.start()
        first = [s for s in SYMBOLS[:21] if s != EXCLUDED]
        assert len(first) == 20 and LEAVING in first
        await wait_until(lambda: fake.topics_now() == topics(first), "exactly the top 20 subscribed", 15)
        assert fake.connections_seen == 1
        await wait_until(lambda: runtime.trader("uni") is not None, "the bot restored", 15)
        bot = runtime.bots["uni"]
        trader = runtime.trader("uni")
        assert trader is not None

        # a long on the symbol about to leave, filled at the next 5m candle's open
        t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
        t0 -= timedelta(minutes=t0.minute % 5)
        signal = Signal("u" * 24, "uni", LEAVING, "5", "trend_pullback", "long", Decimal("100"), Decimal("98"),
                        Decimal("102"), t0)
        async with bot.lock:
            assert trader.guard(signal, UNSCORED) is None  # sized by the risk rules, as the engine does
            trader.on_decisions([SimpleNamespace(signal=signal, action="EXECUTED")])  # type: ignore[list-item]
        fake.push_kline(_candle(LEAVING, t0))
        await wait_until(lambda: _open_on(db, LEAVING), "the trade open in the ledger", 15, every=0.1)

        # the market moves: the leaving symbol's turnover collapses, a new listing takes the lead
        fake.set_turnover(LEAVING, 1)
        fake.list_symbol(NEW, turnover=500_000_000, price="100", launched=datetime.now(UTC) - timedelta(days=60))
        history = [_candle(NEW, t0 + timedelta(minutes=5 * k)) for k in range(12)]
        fake.set_history(NEW, "5", history)
        await refresh.func()  # the scheduled job's run

        now = [NEW, *(s for s in SYMBOLS[:20] if s != EXCLUDED)]
        assert len(now) == 20 and set(bot.symbols) == set(now)
        assert LEAVING not in bot.engine.symbols  # no new entry there ...
        # ... but its open trade keeps its candles: still subscribed, the new symbol too, on the same connection
        await wait_until(lambda: fake.topics_now() == topics({*now, LEAVING}), "the new universe subscribed", 15)
        assert fake.connections_seen == 1 and fake.open_connections == 1
        series = bot.engine.market.get(NEW, "5")
        assert series is not None and series.last_candle is not None  # warmed on its REST history
        assert series.last_candle.open_time == history[-1].open_time
        note = next(n for n in notices if n.kind == "universe" and n.details.get("removed"))
        assert note.details["added"] == [NEW] and note.details["removed"] == [LEAVING]
        assert note.details["held"] == [LEAVING]

        # /universe at the Bot API boundary: the operator sees the new set and why each is in
        before = len(api.to(ADMIN))
        api.send_text(ADMIN, "/universe")
        reply = await asyncio.to_thread(api.reply_to, ADMIN, before, 15, "Universe")
        assert NEW in reply.text and "#1" in reply.text and LEAVING in reply.text.split("still held")[-1]

        # the trade that left still ends normally: its take-profit fills on the next candle
        fake.push_kline(_candle(LEAVING, t0 + timedelta(minutes=5), high=102.5))
        await wait_until(lambda: _closed_on(db, LEAVING), "the trade closed in the ledger", 15, every=0.1)
        [row] = await _trades(db, LEAVING)
        assert row.status == "closed" and row.exit_reason == "tp"
        assert Decimal("101.9") < row.exit_price <= Decimal("102")  # the target, less the paper fill's slippage
        assert row.net_pnl is not None and row.net_pnl > 0

        # nothing open on it any more: the next refresh lets it go, still on the same connection
        await refresh.func()
        await wait_until(lambda: fake.topics_now() == topics(now), "the leaving symbol unsubscribed", 15)
        assert [sorted(r) for r in fake.unsubscribe_requests] == [sorted(topics([LEAVING]))]
        assert fake.connections_seen == 1
    finally:
        await dp.stop_polling()
        await asyncio.wait_for(polling, 10)
        await bot_api.session.close()
        await runtime.stop()
        await db.dispose()


async def _open_on(db: Any, symbol: str) -> bool:
    return any(t.status == "open" for t in await _trades(db, symbol))


async def _closed_on(db: Any, symbol: str) -> bool:
    return any(t.status == "closed" for t in await _trades(db, symbol))
