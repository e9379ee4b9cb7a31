"""A live bot in the host's runtime against the fake Bybit (real BybitBroker + pybit): reconciliation
at start, orders sent once, fills from the private stream written to the ledger as they arrive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.runtime import Runtime
from core.config import BotConfig
from core.ml.scorer import UNSCORED
from core.signal import Signal
from core.trader import Notice
from storage import migrations
from storage.bots import upsert_bot
from storage.db import create_engine, session_factory
from storage.journal import Journal
from storage.ledger import SqlLedger
from tests.fakes.bybit import FakeBybit

CONFIG = BotConfig(id="live", symbols=["BTCUSDT"], mode="live")


@pytest.fixture
def fake() -> Iterator[FakeBybit]:
    with FakeBybit(lambda: datetime.now(UTC)) as server:
        server.set_price("BTCUSDT", "100000")
        yield server


async def _until(predicate, what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_live_bot_trades_through_the_exchange(fake: FakeBybit, tmp_path: Path, sqlite_url: str) -> None:
    settings = fake.live_settings(tmp_path, sqlite_url)
    await asyncio.to_thread(migrations.upgrade, settings.database_url)
    db = create_engine(settings.database_url, null_pool=True)
    async with session_factory(db).begin() as session:
        await upsert_bot(session, CONFIG)
    notices: list[Notice] = []
    runtime = Runtime(settings, db, None, notices.append)
    ledger = SqlLedger(db, Journal(tmp_path / "unused.jsonl"))
    try:
        await runtime.start()
        bot = runtime.bots["live"]
        assert bot.venue is not None and bot.trader.mode == "live"
        await _until(lambda: _true(bool(bot.side_tasks)), "the live bot to be reconciled and running")
        assert bot.engine.extra.get("reconciled_at")

        signal = Signal("c" * 24, "live", "BTCUSDT", "15", "trend_pullback", "long", Decimal("100000"),
                        Decimal("99000"), Decimal("102000"), datetime.now(UTC))
        assert bot.trader.guard(signal, UNSCORED) is None
        bot.trader.on_decisions([SimpleNamespace(signal=signal, action="EXECUTED")])

        async def opened() -> bool:
            return bool(await ledger.open_trades("live"))

        await _until(opened, "the entry fill to reach the ledger")
        assert len(fake.creates(f"pd-{signal.id}-o")) == 1
        trade = (await ledger.open_trades("live"))[0]
        assert trade.mode == "live" and trade.entry_price == Decimal("100000")

        fake.set_price("BTCUSDT", "102000")
        fake.close_position_by("BTCUSDT", "TakeProfit", push=True)

        async def closed() -> bool:
            return bool(await ledger.closed_trades("live"))

        await _until(closed, "the take-profit fill to close the trade")
        done = (await ledger.closed_trades("live"))[0]
        assert done.exit_reason == "tp" and done.exit_price == Decimal("102000") and done.net_pnl > 0
        assert {n.kind for n in notices} >= {"trade_open", "trade_close"}
    finally:
        await runtime.stop()
        await db.dispose()


async def _true(value: bool) -> bool:
    return value
