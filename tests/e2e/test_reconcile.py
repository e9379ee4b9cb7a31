"""Reconciliation against the fake Bybit (the real BybitBroker and pybit): a position closed by its TP
while the desk was down is closed in the ledger at the execution price; a position the desk does not
know becomes a critical recovery item and the bot opens nothing new."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest

from core.config import BotConfig
from core.exchange.bybit_broker import BybitBroker
from core.instruments import Instruments
from core.ledger import LedgerEvent
from core.live import LiveVenue, OrderOutcome, reconcile_once, run_orders
from core.ml.scorer import UNSCORED
from core.reconcile import RecoveryDraft
from core.signal import Signal
from core.trader import Trader
from storage import migrations
from storage.db import create_engine
from storage.journal import Journal
from storage.ledger import SqlLedger
from storage.recovery import RecoveryBook
from tests.fakes.bybit import FakeBybit
from tests.fakes.clock import Clock

T0 = datetime(2025, 3, 3, 12, tzinfo=UTC)
CONFIG = BotConfig(id="live1", symbols=["BTCUSDT", "ETHUSDT"], mode="live", max_positions=3)
SCOPE = set(CONFIG.symbols)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeBybit]:
    with FakeBybit(clock) as server:
        server.set_price("BTCUSDT", "100000")
        server.set_price("ETHUSDT", "3000")
        yield server


@pytest.fixture
async def broker(fake: FakeBybit, clock: Clock) -> AsyncIterator[BybitBroker]:
    b = BybitBroker("pdTestKey0123456789", "pdTestSecret-abcdefghijklmnopqrstuv", rest_url=fake.url,
                    ws_url=fake.private_ws_url, clock=clock, instruments=Instruments({}), timeout=2.0, backoff=0.01)
    await b.load_instruments()
    yield b
    await b.aclose()


def _trader(broker: BybitBroker) -> tuple[Trader, LiveVenue]:
    venue = LiveVenue(broker, CONFIG.fast_interval, Decimal(10_000), clock=lambda: T0)  # no limit entries here
    return Trader(CONFIG, Instruments(), venue, mode="live"), venue


def _signal(sid: str, symbol: str = "BTCUSDT") -> Signal:
    return Signal(sid, CONFIG.id, symbol, "15", "trend_pullback", "long", Decimal("100000"), Decimal("99000"),
                  Decimal("102000"), T0)


async def _report(outcome: OrderOutcome) -> None:
    assert outcome.state is not None, f"unexpected order outcome: {outcome}"


async def test_tp_while_down_and_unknown_position(broker: BybitBroker, fake: FakeBybit, clock: Clock,
                                                  sqlite_url: str, tmp_path: object) -> None:
    await asyncio.to_thread(migrations.upgrade, sqlite_url)
    db = create_engine(sqlite_url, null_pool=True)
    ledger = SqlLedger(db, Journal(tmp_path / "journal.jsonl"))  # type: ignore[operator]
    book = RecoveryBook(db)
    from storage.bots import upsert_bot
    from storage.db import session_factory

    async with session_factory(db).begin() as session:
        await upsert_bot(session, CONFIG)

    async def raise_item(d: RecoveryDraft) -> None:
        await book.raise_item(CONFIG.id, d.kind, dedupe_key=d.dedupe_key, details=d.details, options=d.options,
                              critical=d.critical)

    async def drain(trader: Trader) -> list[LedgerEvent]:
        events = list(trader.events)
        for event in events:
            assert await ledger.record(event) == "db"
        trader.events.clear()
        return events

    try:
        # 1. the desk takes a signal: the order goes to the venue once, the entry fill opens the trade
        trader, venue = _trader(broker)
        signal = _signal("a" * 24)
        assert trader.guard(signal, UNSCORED) is None
        trader.on_decisions([SimpleNamespace(signal=signal, action="EXECUTED")])
        sender = asyncio.create_task(run_orders(venue, _report))
        await asyncio.wait_for(venue.queue.join(), 10)
        sender.cancel()
        assert len(fake.creates(f"pd-{signal.id}-o")) == 1
        clock.now = T0 + timedelta(minutes=1)
        await reconcile_once(trader, broker, since=T0 - timedelta(minutes=1), now=clock.now, raise_item=raise_item,
                             scope=SCOPE)
        opened = await drain(trader)
        assert [e.kind for e in opened] == ["open"] and opened[0].trade.entry_price == Decimal("100000")
        open_trade = opened[0].trade

        # 2. the desk stops; the exchange closes the position by its take-profit, nobody hears of it
        clock.now = T0 + timedelta(hours=2)
        fake.set_price("BTCUSDT", "102000")
        execution = fake.close_position_by("BTCUSDT", "TakeProfit", push=False)

        # 3. a new process: the ledger's open trades, then reconciliation
        trader2, _ = _trader(broker)
        trader2.load_open(await ledger.open_trades(CONFIG.id))
        assert list(trader2.trades) == [open_trade.id]
        notes = (await reconcile_once(trader2, broker, since=T0, now=clock.now, raise_item=raise_item,
                                      scope=SCOPE)).notes
        closed = await drain(trader2)
        assert [e.kind for e in closed] == ["close"], notes
        trade = closed[0].trade
        assert trade.exit_reason == "tp" and trade.exit_price == Decimal(execution["execPrice"])
        assert trade.net_pnl == (trade.exit_price - trade.entry_price) * trade.qty - trade.fees
        stored = await ledger.closed_trades(CONFIG.id)
        assert [t.id for t in stored] == [open_trade.id] and stored[0].exit_reason == "tp"
        assert not await book.pending(CONFIG.id)

        # 4. a position nobody on the desk opened: a critical item, and no new entries
        fake.place_directly({"category": "linear", "symbol": "ETHUSDT", "side": "Sell", "orderType": "Market",
                             "qty": "1", "positionIdx": 0})
        await reconcile_once(trader2, broker, since=T0, now=clock.now, raise_item=raise_item, scope=SCOPE)
        items = await book.pending(CONFIG.id)
        assert [i.kind for i in items] == ["unknown_position"] and items[0].critical
        assert items[0].details["side"] == "short" and items[0].details["stop_loss"] is None  # none invented
        assert "critical recovery item" in (trader2.guard(_signal("b" * 24, "BTCUSDT"), UNSCORED) or "")
        await reconcile_once(trader2, broker, since=T0, now=clock.now, raise_item=raise_item, scope=SCOPE)
        assert len(await book.pending(CONFIG.id)) == 1  # raised once, not every round

        # 5. an admin decides; a second press changes nothing; the ignored state is not raised again, and the
        # bot keeps off the symbol it does not manage
        first = await book.decide(items[0].id, "ignore", "tg:42", 42)
        second = await book.decide(items[0].id, "adopt", "tg:42", 42)
        assert first.ok and not second.ok and second.status == "approved"
        await book.record_effect(items[0].id, {"state": "nothing"}, "tg:42")
        await reconcile_once(trader2, broker, since=T0, now=clock.now, raise_item=raise_item, scope=SCOPE)
        assert not await book.pending(CONFIG.id)
        trader2.state.critical_pending = await book.critical_pending(CONFIG.id) > 0  # as the host recomputes it
        assert "does not manage" in (trader2.guard(_signal("c" * 24, "ETHUSDT"), UNSCORED) or "")
        # a new divergence (the position grew) is raised again
        fake.place_directly({"category": "linear", "symbol": "ETHUSDT", "side": "Sell", "orderType": "Market",
                             "qty": "1", "positionIdx": 0})
        await reconcile_once(trader2, broker, since=T0, now=clock.now, raise_item=raise_item, scope=SCOPE)
        assert [i.details["qty"] for i in await book.pending(CONFIG.id)] == ["2"]
    finally:
        await db.dispose()
