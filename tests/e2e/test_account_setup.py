"""Issue 18, "account set as configured", against the fake Bybit with the real BybitBroker + pybit in the host's
runtime: leverage and margin mode set on the account at start, hedge mode (the right positionIdx on every order,
a round trip into the ledger), and limit entries whose timeout leads to the documented fallback — never two
entries for one signal, across a restart too. Checked at the boundary: the fake exchange's state and the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.runtime import Runtime
from core.config import BotConfig
from core.engine import Decision
from core.exchange.broker import OrderIntent
from core.exchange.bybit_broker import BybitBroker
from core.instruments import Instruments
from core.live import LiveVenue, OrderKind, OrderOutcome, apply_outcome, reconcile_once, run_orders
from core.ml.scorer import UNSCORED
from core.persistence import Batch
from core.signal import Signal
from core.trader import Notice, Trader
from storage import migrations
from storage.bots import upsert_bot
from storage.db import create_engine, session_factory
from storage.models import Order, Trade
from storage.models import Signal as SignalRow
from tests.fakes.bybit import FakeBybit, VenueError
from tests.fakes.clock import Clock, wait_until


@pytest.fixture
def fake() -> Iterator[FakeBybit]:
    with FakeBybit(lambda: datetime.now(UTC)) as server:
        server.set_price("BTCUSDT", "100000")
        server.set_price("ETHUSDT", "3000")
        yield server


@dataclass
class Desk:
    start: Callable[[BotConfig], Awaitable[Runtime]]
    db: AsyncEngine
    notices: list[Notice]


@pytest.fixture
async def desk(fake: FakeBybit, tmp_path: Path, sqlite_url: str) -> AsyncIterator[Desk]:
    """start(config): a live host runtime on the fake, the bot `live` reconciled and running (called again after a
    stop: a restart on the same database)."""
    settings = fake.live_settings(tmp_path, sqlite_url)
    await asyncio.to_thread(migrations.upgrade, settings.database_url)
    db = create_engine(settings.database_url, null_pool=True)
    running: list[Runtime] = []
    notices: list[Notice] = []

    async def start(config: BotConfig) -> Runtime:
        async with session_factory(db).begin() as session:
            await upsert_bot(session, config)
        runtime = Runtime(settings, db, None, notices.append)
        running.append(runtime)
        await runtime.start()
        bot = runtime.bots["live"]
        await wait_until(lambda: bool(bot.side_tasks), "the live bot to be reconciled and running", 15)
        return runtime

    try:
        yield Desk(start, db, notices)
    finally:
        for runtime in running:
            if not runtime.stopping.is_set():
                await runtime.stop()
        await db.dispose()


_ids = iter(f"{n:024x}" for n in range(0xacc0001, 0xacc1000))


async def _take(runtime: Runtime, side: str = "long", entry: str = "100000", symbol: str = "BTCUSDT") -> Signal:
    """A signal the engine takes (scored, guarded, recorded, stored), handed to the trader as the runner does."""
    bot = runtime.bots["live"]
    price = Decimal(entry)
    sl, tp = (price * Decimal("0.99"), price * Decimal("1.02")) if side == "long" else (
        price * Decimal("1.01"), price * Decimal("0.98"))
    signal = Signal(next(_ids), "live", symbol, "15", "trend_pullback", side, price, sl, tp, datetime.now(UTC))
    assert bot.trader.guard(signal, UNSCORED) is None
    phantom = bot.engine.book.record(signal, "EXECUTED", None, None, None)
    decision = Decision(signal, "EXECUTED", None, UNSCORED, phantom)
    bot.engine.executed[signal.id] = decision
    await bot.signals.save("live", Batch(decisions=[decision], phantoms={phantom.id: phantom}))
    bot.trader.on_decisions([decision])
    return signal


async def _trades(db: AsyncEngine, status: str) -> list[Trade]:
    async with session_factory(db)() as session:
        return list((await session.scalars(select(Trade).where(Trade.status == status))).all())


async def _orders(db: AsyncEngine, trade_id: str) -> list[Order]:
    async with session_factory(db)() as session:
        return list((await session.scalars(select(Order).where(Order.trade_id == trade_id))).all())


async def _signal_row(db: AsyncEngine, signal_id: str) -> SignalRow:
    async with session_factory(db)() as session:
        row = await session.get(SignalRow, signal_id)
        assert row is not None
        return row


def _sent(fake: FakeBybit, path: str) -> list[dict[str, Any]]:
    return [body for _, p, body in list(fake.private_requests) if p == path]


# -- (c) leverage and margin mode set on the account at start -----------------------------------------------------


async def test_start_sets_margin_mode_and_leverage_per_symbol(desk: Desk, fake: FakeBybit) -> None:
    start = desk.start
    assert fake.margin_mode == "REGULAR_MARGIN" and fake.leverage_of("ETHUSDT") == Decimal(10)  # the account as found
    await start(BotConfig(id="live", symbols=["BTCUSDT", "ETHUSDT"], mode="live", max_leverage=Decimal(3),
                          margin_mode="isolated"))
    assert fake.margin_mode == "ISOLATED_MARGIN"
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert fake.leverage_of(symbol) == Decimal(3)
        assert fake.margin_mode_of(symbol) == "ISOLATED_MARGIN"  # the leverage was set under the bot's margin mode
    assert {b["symbol"] for b in _sent(fake, "/v5/position/set-leverage")} == {"BTCUSDT", "ETHUSDT"}
    assert _sent(fake, "/v5/account/set-margin-mode") == [{"setMarginMode": "ISOLATED_MARGIN"}]


async def test_prepare_symbol_is_idempotent_and_a_later_symbol_is_set_too(
    desk: Desk, fake: FakeBybit
) -> None:
    start = desk.start
    fake.set_price("SOLUSDT", "150")
    config = BotConfig(id="live", symbols=["BTCUSDT"], mode="live", max_leverage=Decimal(4), margin_mode="cross")
    runtime = await start(config)
    # a symbol the universe adds later: the same account setup through the runtime
    setup = await runtime.prepare_symbol("live", "SOLUSDT")
    assert setup is not None and setup.position_mode == "one_way" and setup.leverage == Decimal(4)
    assert fake.leverage_of("SOLUSDT") == Decimal(4) and fake.margin_mode_of("SOLUSDT") == "REGULAR_MARGIN"
    await runtime.stop()
    # the next start finds the leverage already set: Bybit's 110043 ("not modified") counts as success
    await start(config)
    assert [b["symbol"] for b in _sent(fake, "/v5/position/set-leverage")] == ["BTCUSDT", "SOLUSDT", "BTCUSDT"]
    assert fake.leverage_of("BTCUSDT") == Decimal(4)
    assert not [n for n in desk.notices if n.kind == "bot_failed"]


async def test_a_symbol_joining_a_live_bot_gets_the_account_set(desk: Desk, fake: FakeBybit) -> None:
    """The universe adds a symbol to a running live bot: the feed's join path sets the account for it."""
    fake.set_price("SOLUSDT", "150")
    config = BotConfig(id="live", symbols=["BTCUSDT"], mode="live", max_leverage=Decimal(4), margin_mode="cross")
    runtime = await desk.start(config)
    assert fake.leverage_of("SOLUSDT") == Decimal(10)  # not the bot's yet: the account as found
    runtime.bots["live"].config = config.model_copy(update={"symbols": ["BTCUSDT", "SOLUSDT"]})
    await runtime._prepare_live(["SOLUSDT"])
    assert fake.leverage_of("SOLUSDT") == Decimal(4) and fake.margin_mode_of("SOLUSDT") == "REGULAR_MARGIN"
    assert not [n for n in desk.notices if n.kind == "bot_failed"]


async def test_two_bots_asking_for_different_account_margin_modes_are_refused(
    desk: Desk, fake: FakeBybit
) -> None:
    async with session_factory(desk.db).begin() as session:  # both bots trade one account from this process
        await upsert_bot(session, BotConfig(id="other", symbols=["ETHUSDT"], mode="live", margin_mode="cross"))
    runtime = await desk.start(BotConfig(id="live", symbols=["BTCUSDT"], mode="live", margin_mode="isolated"))
    assert "other" not in runtime.bots  # refused at start, with one clear message; the first bot trades
    [failed] = [n for n in desk.notices if n.kind == "bot_failed"]
    assert failed.bot_id == "other" and "margin mode is isolated" in failed.text and "asks for cross" in failed.text
    assert fake.margin_mode == "ISOLATED_MARGIN" and fake.leverage_of("ETHUSDT") == Decimal(10)


# -- (a) hedge mode: the right positionIdx on every order, a full round trip into the ledger ------------------------


async def test_hedge_mode_round_trips_reach_the_ledger(desk: Desk, fake: FakeBybit) -> None:
    fake.set_position_mode(hedge=True)
    with pytest.raises(VenueError, match="position idx not match position mode"):  # the fake refuses one-way orders
        fake.place_directly({"symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", "qty": "0.01"})
    start, db = desk.start, desk.db
    runtime = await start(BotConfig(id="live", symbols=["BTCUSDT"], mode="live", max_positions=1))

    # a long: entry on the Buy side (1), closed by its take-profit
    long = await _take(runtime, "long")
    await wait_until(lambda: _trades(db, "open"), "the long in the ledger", 15)
    [entry] = fake.creates(f"pd-{long.id}-o")
    assert entry.ret_code == 0 and entry.body["positionIdx"] == 1 and entry.body["side"] == "Buy"
    assert fake.position("BTCUSDT")["positionIdx"] == 1  # type: ignore[index]
    fake.close_position_by("BTCUSDT", "TakeProfit")
    await wait_until(lambda: _trades(db, "closed"), "the take-profit to close the long", 15)
    [done] = await _trades(db, "closed")
    assert done.side == "long" and done.exit_reason == "tp" and done.exit_price == Decimal("102000")
    assert done.net_pnl is not None and done.net_pnl > 0

    # a short: entry on the Sell side (2), its stop moved on side 2 (trailing), closed by hand: reduce-only on 2
    fake.set_price("BTCUSDT", "100000")
    short = await _take(runtime, "short")
    await wait_until(lambda: fake.position("BTCUSDT"), "the short to fill", 15)
    [entry] = fake.creates(f"pd-{short.id}-o")
    assert entry.body["positionIdx"] == 2 and entry.body["side"] == "Sell"
    await runtime.bots["live"].venue.broker.set_stop("BTCUSDT", Decimal("100500"), "short")  # type: ignore[union-attr]
    assert _sent(fake, "/v5/position/trading-stop")[-1]["positionIdx"] == 2
    await wait_until(lambda: _trades(db, "open"), "the short in the ledger", 15)
    await runtime.close_positions("live", "BTCUSDT", "test")
    await wait_until(lambda: fake.position("BTCUSDT") is None, "the close to flatten the short", 15)
    [close] = fake.creates(f"pd-{short.id}-c")
    assert close.ret_code == 0 and close.body["positionIdx"] == 2 and close.body["side"] == "Buy"
    assert close.body["reduceOnly"] is True

    async def both_closed() -> bool:
        return len(await _trades(db, "closed")) == 2
    await wait_until(both_closed, "the short's close in the ledger", 15)
    closed = {t.side: t for t in await _trades(db, "closed")}
    assert closed["short"].exit_reason == "manual" and not await _trades(db, "open")
    assert {o.order_link_id for o in await _orders(db, closed["short"].id)} == {f"pd-{short.id}-o", f"pd-{short.id}-c"}
    # nothing the desk sent was refused for its position index
    assert all(r.ret_code == 0 for r in fake.creates())


# -- (b) limit entries: timeout, fallback, never two entries for one signal -----------------------------------------

LIMIT = dict(id="live", symbols=["BTCUSDT"], mode="live", max_positions=1, entry_order="limit", entry_timeout_s=5)


async def test_a_limit_entry_that_fills_pays_the_maker_fee(desk: Desk, fake: FakeBybit) -> None:
    start, db = desk.start, desk.db
    runtime = await start(BotConfig(**LIMIT, entry_fallback="market"))  # type: ignore[arg-type]
    signal = await _take(runtime, "long", entry="99950")  # below the market: it rests
    await wait_until(lambda: fake.resting("BTCUSDT"), "the post-only limit to rest", 15)
    [order] = fake.resting("BTCUSDT")
    assert (order["orderType"], order["timeInForce"], Decimal(order["price"])) == ("Limit", "PostOnly", Decimal(99950))
    fake.set_price("BTCUSDT", "99940")  # trades through it
    await wait_until(lambda: _trades(db, "open"), "the limit fill in the ledger", 15)
    [trade] = await _trades(db, "open")
    assert trade.entry_price == Decimal("99950") and trade.fees == trade.qty * Decimal("99950") * Decimal("0.0002")
    assert fake.creates(f"pd-{signal.id}-m") == []  # filled in time: no fallback
    [row] = await _orders(db, trade.id)
    assert (row.order_link_id, row.order_type, row.fee) == (f"pd-{signal.id}-o", "Limit", trade.fees)


async def test_limit_timeout_falls_back_to_one_market_entry(desk: Desk, fake: FakeBybit) -> None:
    start, db = desk.start, desk.db
    runtime = await start(BotConfig(**LIMIT, entry_fallback="market", fallback_max_move_bps=50))  # type: ignore[arg-type]
    signal = await _take(runtime, "long", entry="99950")
    await wait_until(lambda: fake.resting("BTCUSDT"), "the limit to rest", 15)
    # nothing trades through it: after 5 s it is cancelled, and the price (100000) is within 50 bps: market entry
    await wait_until(lambda: _trades(db, "open"), "the fallback entry in the ledger", 20)
    limit, fallback = f"pd-{signal.id}-o", f"pd-{signal.id}-m"
    assert [o["orderStatus"] for o in fake.orders(limit)] == ["Cancelled"]
    assert [o["orderStatus"] for o in fake.orders(fallback)] == ["Filled"]
    assert len(fake.creates(limit)) == 1 and len(fake.creates(fallback)) == 1
    entries = [o for o in fake.orders() if o["orderLinkId"].startswith(f"pd-{signal.id}") and o["cumExecQty"] != "0"]
    assert len(entries) == 1  # one entry filled for the signal
    [trade] = await _trades(db, "open")
    assert trade.entry_price == Decimal("100000") and trade.qty == Decimal(fake.position("BTCUSDT")["size"])  # type: ignore[index]
    assert trade.fees == trade.qty * Decimal("100000") * Decimal("0.00055")  # the taker fee: it took liquidity
    assert {o.order_link_id for o in await _orders(db, trade.id)} == {fallback}


async def test_limit_timeout_skips_when_the_price_ran_away(desk: Desk, fake: FakeBybit) -> None:
    start, db = desk.start, desk.db
    runtime = await start(BotConfig(**LIMIT, entry_fallback="market", fallback_max_move_bps=20))  # type: ignore[arg-type]
    signal = await _take(runtime, "long", entry="99950")
    await wait_until(lambda: fake.resting("BTCUSDT"), "the limit to rest", 15)
    fake.set_price("BTCUSDT", "100500")  # 55 bps above the limit: past the bound

    async def rejected() -> bool:
        return (await _signal_row(db, signal.id)).action == "REJECTED"
    await wait_until(rejected, "the entry to be skipped", 20)
    assert "past the fallback's bound" in ((await _signal_row(db, signal.id)).reason or "")
    assert [o["orderStatus"] for o in fake.orders(f"pd-{signal.id}-o")] == ["Cancelled"]
    assert fake.creates(f"pd-{signal.id}-m") == [] and fake.position("BTCUSDT") is None
    assert not await _trades(db, "open") and not runtime.bots["live"].trader.trades


async def test_limit_fallback_skip(desk: Desk, fake: FakeBybit) -> None:
    start, db = desk.start, desk.db
    runtime = await start(BotConfig(**LIMIT, entry_fallback="skip"))  # type: ignore[arg-type]
    signal = await _take(runtime, "long", entry="99950")

    async def rejected() -> bool:
        return (await _signal_row(db, signal.id)).action == "REJECTED"
    await wait_until(rejected, "the unfilled limit to be cancelled and skipped", 20)
    assert [o["orderStatus"] for o in fake.orders(f"pd-{signal.id}-o")] == ["Cancelled"]
    assert fake.creates(f"pd-{signal.id}-m") == [] and fake.position("BTCUSDT") is None


async def test_a_post_only_that_would_take_falls_back_at_once(desk: Desk, fake: FakeBybit) -> None:
    start, db = desk.start, desk.db
    runtime = await start(BotConfig(**LIMIT, entry_fallback="market"))  # type: ignore[arg-type]
    signal = await _take(runtime, "long", entry="100010")  # above the market: a post-only Buy would take
    await wait_until(lambda: _trades(db, "open"), "the fallback entry in the ledger", 15)
    [limit] = fake.orders(f"pd-{signal.id}-o")
    assert limit["orderStatus"] == "Cancelled" and limit["rejectReason"] == "EC_PostOnlyWillTakeLiquidity"
    assert len(fake.creates(f"pd-{signal.id}-m")) == 1 and fake.position("BTCUSDT") is not None


async def test_a_restart_mid_timeout_places_no_second_entry(desk: Desk, fake: FakeBybit) -> None:
    start, db = desk.start, desk.db
    config = BotConfig(**LIMIT, entry_fallback="market", fallback_max_move_bps=50)  # type: ignore[arg-type]
    first = await start(config)
    signal = await _take(first, "long", entry="99950")
    await wait_until(lambda: fake.resting("BTCUSDT"), "the limit to rest", 15)
    await first.stop()  # mid-timeout: the limit stays in the book, the pending trade is in the checkpoint

    second = await start(config)
    assert len(second.bots["live"].trader.pending()) == 1  # restored, and not sent again
    await wait_until(lambda: _trades(db, "open"), "the fallback entry after the restart", 20)
    limit, fallback = f"pd-{signal.id}-o", f"pd-{signal.id}-m"
    assert len(fake.creates(limit)) == 1 and len(fake.creates(fallback)) == 1
    assert [o["orderStatus"] for o in fake.orders(limit)] == ["Cancelled"]
    [trade] = await _trades(db, "open")
    assert trade.qty == Decimal(fake.position("BTCUSDT")["size"])  # type: ignore[index]  # one entry's worth


async def test_a_cancel_that_failed_is_tried_again_by_the_next_reconciliation(desk: Desk, fake: FakeBybit) -> None:
    start, db = desk.start, desk.db
    runtime = await start(BotConfig(**LIMIT, entry_fallback="skip"))  # type: ignore[arg-type]
    fake.fail_next("/v5/order/cancel", "5xx", act=False, count=4)  # every try of the broker's one cancel
    signal = await _take(runtime, "long", entry="99950")
    await wait_until(lambda: any(n.kind == "order_failed" for n in desk.notices), "the cancel to fail", 20)
    assert fake.resting("BTCUSDT")  # still in the book: the timeout could not withdraw it
    await runtime.reconcile("live")  # finds it resting past its deadline: cancelled now

    async def rejected() -> bool:
        return (await _signal_row(db, signal.id)).action == "REJECTED"
    await wait_until(rejected, "the entry to be withdrawn and skipped", 15)
    assert not fake.resting("BTCUSDT") and fake.position("BTCUSDT") is None
    assert len(fake.creates(f"pd-{signal.id}-o")) == 1


async def test_a_crash_after_the_fallback_was_sent_finds_it_instead_of_sending_again(fake: FakeBybit) -> None:
    """The checkpoint predates the fallback (the process died between sending it and saving): the next process
    reconciles by link id — the fallback's fills open the trade, nothing is sent again."""
    clock = Clock(datetime.now(UTC))
    config = BotConfig(**LIMIT, entry_fallback="market", fallback_max_move_bps=50)  # type: ignore[arg-type]
    broker = BybitBroker("pdTestKey0123456789", "pdTestSecret-abcdefghijklmnopqrstuv", rest_url=fake.url,
                         ws_url=fake.private_ws_url, clock=clock, instruments=Instruments({}), timeout=2.0,
                         backoff=0.01)
    try:
        await broker.load_instruments()
        await broker.prepare_symbol("BTCUSDT", leverage=config.max_leverage)
        venue = LiveVenue(broker, config.fast_interval, Decimal(10_000), clock=clock, entry_timeout_s=3600)
        trader = Trader(config, broker.instruments, venue, mode="live")

        async def report(outcome: OrderOutcome) -> None:
            apply_outcome(trader, outcome)

        sender = asyncio.create_task(run_orders(venue, report))
        signal = Signal(next(_ids), "live", "BTCUSDT", "15", "trend_pullback", "long", Decimal(99950),
                        Decimal(98950), Decimal(101950), clock())
        assert trader.guard(signal, UNSCORED) is None
        trader.on_decisions([SimpleNamespace(signal=signal, action="EXECUTED")])
        await asyncio.wait_for(venue.queue.join(), 10)
        assert fake.resting("BTCUSDT")
        checkpoint = trader.as_json()  # saved while the limit rests

        [trade] = trader.pending()
        venue.queue.put_nowait((OrderKind.CANCEL, trader.entry_intent(trade)))  # its timeout
        await wait_until(lambda: fake.position("BTCUSDT"), "the fallback to fill", 10)
        await asyncio.wait_for(venue.queue.join(), 10)
        sender.cancel()
        assert len(fake.creates(f"pd-{signal.id}-m")) == 1

        # the next process, from the older checkpoint
        venue2 = LiveVenue(broker, config.fast_interval, Decimal(10_000), clock=clock)
        trader2 = Trader(config, broker.instruments, venue2, mode="live")
        trader2.restore(checkpoint)
        assert [t.fallback for t in trader2.pending()] == [False]

        async def nothing(item: object) -> None:
            raise AssertionError(f"no recovery item expected: {item}")

        # a round that does not see the fills yet (its window ends before them): the limit's state says
        # Cancelled, so the trader asks for its fallback — which the broker finds at the exchange by its link id
        await reconcile_once(trader2, broker, since=clock() - timedelta(minutes=5), now=clock(),
                             scope={"BTCUSDT"}, raise_item=nothing)
        assert [t.fallback for t in trader2.pending()] == [True]
        [(kind, intent)] = [venue2.queue.get_nowait() for _ in range(venue2.queue.qsize())]
        assert kind == OrderKind.OPEN and isinstance(intent, OrderIntent)
        assert intent.order_link_id == f"pd-{signal.id}-m"
        state = await broker.open(intent)
        assert state.status == "Filled" and len(fake.creates(f"pd-{signal.id}-m")) == 1  # found, not sent
        # the next round sees the fallback's fills: the trade opens at them
        clock.now = datetime.now(UTC)
        await reconcile_once(trader2, broker, since=clock() - timedelta(minutes=5), now=clock(),
                             scope={"BTCUSDT"}, raise_item=nothing)
        [opened] = trader2.held()
        assert opened.record.entry_price == Decimal(100000) and opened.record.qty == Decimal(
            fake.position("BTCUSDT")["size"])  # type: ignore[index]
        assert venue2.queue.empty()  # nothing more to send
        assert len(fake.creates(f"pd-{signal.id}-o")) == 1 and len(fake.creates(f"pd-{signal.id}-m")) == 1
    finally:
        await broker.aclose()
