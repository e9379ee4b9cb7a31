"""The live order lifecycle in the host's runtime against the fake Bybit (real BybitBroker + pybit): entries the
exchange refuses, never confirms or only partly fills, and funding settlements — checked at the boundary
(the exchange's position, the ledger's rows, the signal's stored action, what the next signal may do)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.runtime import BotRuntime, Runtime
from core.config import BotConfig
from core.desk import Desk
from core.engine import Decision
from core.ml.scorer import UNSCORED
from core.persistence import Batch
from core.signal import Signal
from core.trader import Notice
from storage import migrations
from storage.bots import upsert_bot
from storage.db import create_engine, session_factory
from storage.desk_store import SqlDeskStore
from storage.models import Signal as SignalRow
from storage.models import Trade
from tests.fakes.bybit import FakeBybit
from tests.fakes.clock import wait_until

CONFIG = BotConfig(id="live", symbols=["BTCUSDT", "ETHUSDT"], mode="live", max_positions=1)


@pytest.fixture
def fake() -> Iterator[FakeBybit]:
    with FakeBybit(lambda: datetime.now(UTC)) as server:
        server.set_price("BTCUSDT", "100000")
        server.set_price("ETHUSDT", "3000")
        yield server


@dataclass
class Live:
    runtime: Runtime
    bot: BotRuntime
    db: object
    notices: list[Notice]


@pytest.fixture
async def live(fake: FakeBybit, tmp_path: Path, sqlite_url: str) -> AsyncIterator[Live]:
    settings = fake.live_settings(tmp_path, sqlite_url)
    await asyncio.to_thread(migrations.upgrade, settings.database_url)
    db = create_engine(settings.database_url, null_pool=True)
    async with session_factory(db).begin() as session:
        await upsert_bot(session, CONFIG)
    notices: list[Notice] = []
    runtime = Runtime(settings, db, None, notices.append)
    try:
        await runtime.start()
        bot = runtime.bots["live"]
        await wait_until(lambda: bool(bot.side_tasks), "the live bot to be reconciled and running", 15)
        yield Live(runtime, bot, db, notices)
    finally:
        await runtime.stop()
        await db.dispose()


_ids = iter(f"{n:024x}" for n in range(1, 1000))


async def _take(live: Live, symbol: str = "BTCUSDT", price: str = "100000") -> Signal:
    """A signal the engine takes (scored, guarded, recorded, stored), sent to the exchange by the trader."""
    entry = Decimal(price)
    signal = Signal(next(_ids), "live", symbol, "15", "trend_pullback", "long", entry, entry * Decimal("0.99"),
                    entry * Decimal("1.02"), datetime.now(UTC))
    bot = live.bot
    assert bot.trader.guard(signal, UNSCORED) is None
    phantom = bot.engine.book.record(signal, "EXECUTED", None, None, None)
    decision = Decision(signal, "EXECUTED", None, UNSCORED, phantom)
    bot.engine.executed[signal.id] = decision
    await bot.signals.save("live", Batch(decisions=[decision], phantoms={phantom.id: phantom}))  # as the runner does
    bot.trader.on_decisions([decision])
    return signal


async def _signal_row(live: Live, signal_id: str) -> SignalRow:
    async with session_factory(live.db)() as session:  # type: ignore[arg-type]
        row = await session.get(SignalRow, signal_id)
        assert row is not None
        return row


async def _trades(live: Live, status: str) -> list[Trade]:
    async with session_factory(live.db)() as session:  # type: ignore[arg-type]
        return list((await session.scalars(select(Trade).where(Trade.status == status))).all())


def _ended(live: Live, signal: Signal):
    """The entry is gone from the trader and its signal stored as REJECTED."""
    async def check() -> bool:
        return not live.bot.trader.trades and (await _signal_row(live, signal.id)).action == "REJECTED"
    return check


async def test_refused_entries_free_their_slot(live: Live, fake: FakeBybit) -> None:
    # insufficient balance: Bybit's 110007
    fake.set_wallet_balance("10")
    refused = await _take(live)
    await wait_until(_ended(live, refused), "the refused entry to end", 15)
    row = await _signal_row(live, refused.id)
    assert row.action == "REJECTED" and "110007" in (row.reason or "") and row.trade_id is None
    assert fake.position("BTCUSDT") is None and not await _trades(live, "open")
    assert any(n.kind == "entry_rejected" for n in live.notices)

    # below the exchange's minimum (the venue raised it after the desk loaded its rules)
    fake.set_wallet_balance("100000")
    fake.set_instrument("ETHUSDT", "0.01", "0.01", "1000")
    small = await _take(live, "ETHUSDT", "3000")
    await wait_until(_ended(live, small), "the too-small entry to end", 15)
    fake.set_instrument("ETHUSDT", "0.01", "0.01", "0.01")

    # the exchange answers 5xx to every create and has no trace of the order: the entry is cancelled
    fake.fail_next("/v5/order/create", "5xx", act=False, count=20)
    lost = await _take(live)
    await wait_until(_ended(live, lost), "the unconfirmed entry to be looked up and cancelled", 30)
    assert fake.position("BTCUSDT") is None

    # max_positions is 1: had any of them kept its slot, this one would be blocked
    fake.clear_faults()
    taken = await _take(live)
    await wait_until(lambda: bool(fake.position("BTCUSDT")), "the next entry to fill", 15)
    async def opened() -> bool:
        return bool(await _trades(live, "open"))
    await wait_until(opened, "the next entry in the ledger", 15)
    assert (await _signal_row(live, taken.id)).action == "EXECUTED"


async def test_half_filled_entry_then_take_profit_and_funding(live: Live, fake: FakeBybit) -> None:
    fake.set_partial_fill("BTCUSDT", "0.5")
    signal = await _take(live)
    bot = live.bot

    async def opened() -> list[Trade]:
        return await _trades(live, "open")
    await wait_until(opened, "the half-filled entry to open", 15)
    [trade] = await _trades(live, "open")
    held = Decimal(fake.position("BTCUSDT")["size"])  # type: ignore[index]
    assert trade.qty == held and held < bot.trader.risk.size(signal, Decimal(10000)).qty  # type: ignore[union-attr]

    # funding on the stream: booked on the trade, never taken for a fill
    paid = Decimal(fake.settle_funding("BTCUSDT", "0.0001")["execFee"])

    async def funded(amount: Decimal) -> bool:
        rows = await _trades(live, "open")
        return bool(rows) and rows[0].funding == amount
    await wait_until(lambda: funded(-paid), "the stream's funding on the trade", 15)
    assert fake.position("BTCUSDT") is not None and len(await _trades(live, "open")) == 1
    # funding the stream missed (a reconnect): the next reconciliation books it from REST, once
    paid2 = Decimal(fake.settle_funding("BTCUSDT", "0.0002", push=False)["execFee"])
    await live.runtime.reconcile("live")
    await live.runtime.reconcile("live")
    assert (await _trades(live, "open"))[0].funding == -(paid + paid2)

    # the take-profit closes the filled half; net PnL = gross − fees + funding
    fake.set_price("BTCUSDT", str(signal.take_profit))
    execution = fake.close_position_by("BTCUSDT", "TakeProfit")

    async def closed() -> list[Trade]:
        return await _trades(live, "closed")
    await wait_until(closed, "the take-profit to close the trade", 15)
    [done] = await _trades(live, "closed")
    exit_price = Decimal(execution["execPrice"])
    assert done.qty == held and done.exit_reason == "tp" and done.exit_price == exit_price
    assert done.gross_pnl == (exit_price - done.entry_price) * held
    assert done.net_pnl == done.gross_pnl - done.fees + done.funding and done.funding == -(paid + paid2)
    stats = await Desk(SqlDeskStore(live.db), live.runtime, clock=lambda: datetime.now(UTC) + timedelta(  # type: ignore[arg-type]
        seconds=1)).stats(bot_id="live")
    assert stats["trades"] == 1 and stats["funding"] == pytest.approx(float(done.funding))
    assert stats["net_pnl"] == pytest.approx(float(done.net_pnl))
