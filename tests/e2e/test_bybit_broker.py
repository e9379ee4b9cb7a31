"""BybitBroker end to end: the real pybit client (HTTP in worker threads, the private WebSocket and its auth)
against FakeBybit on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.exchange.broker import Fill, OrderIntent, OrderState, Position, Side, order_link_id
from core.exchange.bybit_broker import _HTTP, BybitBroker, OrderRejected, RateLimiter, VenueUnavailable
from core.exchange.bybit_private import PrivateEvent
from core.instruments import Instruments
from tests.fakes.bybit import FakeBybit
from tests.fakes.clock import Clock, threads_stopped, wait_until

KEY = "pdTestKey0123456789"
SECRET = "pdTestSecret-abcdefghijklmnopqrstuv"
T0 = datetime(2025, 3, 3, 12, tzinfo=UTC)
CREATE = "/v5/order/create"


def intent(
    signal: str = "s1",
    *,
    symbol: str = "BTCUSDT",
    side: Side = "long",
    qty: str = "0.0129",
    sl: str | None = "95000.07",
    tp: str | None = "105000.06",
    leverage: str = "5",
    purpose: str = "open",
) -> OrderIntent:
    return OrderIntent(
        bot_id="bot1",
        signal_id=signal,
        symbol=symbol,
        side=side,
        qty=Decimal(qty),
        leverage=Decimal(leverage),
        order_link_id=order_link_id(signal, "close" if purpose == "close" else "open"),
        stop_loss=Decimal(sl) if sl is not None else None,
        take_profit=Decimal(tp) if tp is not None else None,
        reduce_only=purpose == "close",
    )


class Events:
    """Consumes broker.events() in a task; the test takes what arrived."""

    def __init__(self, broker: BybitBroker) -> None:
        self.got: list[PrivateEvent] = []
        self.task = asyncio.create_task(self._run(broker))

    async def _run(self, broker: BybitBroker) -> None:
        async for event in broker.events():
            self.got.append(event)

    def of(self, kind: type, **match: Any) -> list[Any]:
        return [e for e in self.got if isinstance(e, kind) and all(getattr(e, k) == v for k, v in match.items())]

    async def wait(self, kind: type, count: int = 1, **match: Any) -> list[Any]:
        await wait_until(lambda: len(self.of(kind, **match)) >= count or self.task.done(), f"{count} {kind.__name__}")
        if self.task.done():
            self.task.result()
        return self.of(kind, **match)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeBybit]:
    with FakeBybit(clock) as server:
        server.set_price("BTCUSDT", "100000")
        server.set_price("ETHUSDT", "3000")
        server.set_price("XRPUSDT", "1")
        yield server


@pytest.fixture
async def make_broker(fake: FakeBybit, clock: Clock) -> AsyncIterator[Callable[..., BybitBroker]]:
    """BybitBroker factory pointed at the fake; closes every broker and checks that no thread survives."""
    before = set(threading.enumerate())
    brokers: list[BybitBroker] = []

    def make(**options: Any) -> BybitBroker:
        options = {
            "rest_url": fake.url,
            "ws_url": fake.private_ws_url,
            "clock": clock,
            "instruments": Instruments({}),
            "timeout": 2.0,
            "backoff": 0.01,
            "max_backoff": 0.05,
            "confirm_delay": 0.01,
            **options,
        }
        broker = BybitBroker(KEY, SECRET, **options)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        await broker.aclose()

    await threads_stopped(before, "broker threads to stop")


# -- instruments, rounding, minimums, leverage ---------------------------------------------------------------


async def test_instruments_load_across_cursor_pages(make_broker: Callable[..., BybitBroker], fake: FakeBybit) -> None:
    fake.set_instrument("1000PEPEUSDT", "0.0000001", "100", "100", "5")
    broker = make_broker(instruments_page=2)
    assert await broker.load_instruments() == 7
    assert len(fake.instrument_requests) == 4  # 2 + 2 + 2 + 1
    assert [q.get("cursor") for q in fake.instrument_requests] == [None, "page2", "page4", "page6"]
    btc = broker.instrument("BTCUSDT")
    assert (btc.tick, btc.qty_step, btc.min_qty, btc.min_notional) == (
        Decimal("0.10"), Decimal("0.001"), Decimal("0.001"), Decimal("5"),
    )
    assert broker.instruments.get("1000PEPEUSDT", 0.00001).tick == Decimal("0.0000001")  # in the shared registry


async def test_open_rounds_to_the_grids_and_sends_tpsl_full(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit
) -> None:
    broker = make_broker()
    state = await broker.open(intent("s1"))
    [create] = fake.creates("pd-s1-o")
    assert create.body == {
        "category": "linear",
        "symbol": "BTCUSDT",
        "side": "Buy",
        "orderType": "Market",
        "qty": "0.012",  # 0.0129 rounded down to the 0.001 step
        "positionIdx": 0,
        "orderLinkId": "pd-s1-o",
        "takeProfit": "105000.10",  # nearest tick (0.10)
        "stopLoss": "95000.00",  # a long's stop rounds down, away from the entry
        "tpslMode": "Full",
    }
    assert isinstance(state, OrderState)
    assert (state.status, state.filled_qty, state.avg_price, state.side) == (
        "Filled", Decimal("0.012"), Decimal("100000"), "Buy",
    )
    assert state.fee == Decimal("0.66") and state.exchange_order_id and state.created_at == T0

    # a short: stop rounds up, take-profit to the nearest tick
    await broker.open(intent("s2", symbol="ETHUSDT", side="short", qty="0.0371", sl="3100.001", tp="2900.004"))
    [short] = fake.creates("pd-s2-o")
    assert (short.body["side"], short.body["qty"], short.body["stopLoss"], short.body["takeProfit"]) == (
        "Sell", "0.03", "3100.01", "2900.00",
    )
    assert fake.api_keys_seen.keys() == {KEY}


async def test_no_tp_or_sl_is_ever_invented(make_broker: Callable[..., BybitBroker], fake: FakeBybit) -> None:
    broker = make_broker()
    await broker.open(intent("bare", sl=None, tp=None))
    [create] = fake.creates("pd-bare-o")
    assert not {"takeProfit", "stopLoss", "tpslMode"} & create.body.keys()
    await broker.open(intent("slonly", tp=None))
    [create] = fake.creates("pd-slonly-o")
    assert create.body["stopLoss"] == "95000.00" and "takeProfit" not in create.body
    assert create.body["tpslMode"] == "Full"


async def test_orders_below_the_minimums_or_with_misplaced_stops_are_refused(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit
) -> None:
    broker = make_broker()
    with pytest.raises(OrderRejected, match=r"rounds down to 0\.000, below the minimum order qty 0\.001"):
        await broker.open(intent("tiny", qty="0.0009"))
    with pytest.raises(OrderRejected, match=r"4 x 1 = 4 USDT is below the minimum order value 5 USDT"):
        await broker.open(intent("cheap", symbol="XRPUSDT", qty="4.9", sl="0.9", tp="1.2"))
    with pytest.raises(OrderRejected, match=r"stop-loss 100500\.00 must be below the last price 100000"):
        await broker.open(intent("wrongsl", sl="100500"))
    with pytest.raises(OrderRejected, match="is not a Bybit linear instrument"):
        await broker.open(intent("nosuch", symbol="NOPEUSDT"))
    assert fake.creates() == []  # nothing was sent
    assert fake.leverage_requests == []


async def test_leverage_is_set_once_and_unchanged_is_fine(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit
) -> None:
    broker = make_broker()
    assert await broker.ensure_leverage("BTCUSDT", Decimal("5")) is True
    assert await broker.ensure_leverage("BTCUSDT", Decimal("5.0")) is False  # cached: no request
    assert await broker.ensure_leverage("ETHUSDT", Decimal("10")) is False  # the venue answers 110043
    await broker.open(intent("a", leverage="5"))
    await broker.open(intent("b", leverage="5"))
    assert fake.leverage_requests == [
        {"category": "linear", "symbol": "BTCUSDT", "buyLeverage": "5", "sellLeverage": "5"},
        {"category": "linear", "symbol": "ETHUSDT", "buyLeverage": "10", "sellLeverage": "10"},
    ]
    assert fake.leverage_of("BTCUSDT") == Decimal(5)


# -- idempotency ----------------------------------------------------------------------------------------


async def test_a_timeout_where_the_venue_accepted_is_looked_up_and_not_sent_again(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit
) -> None:
    broker = make_broker(timeout=0.5)
    fake.fail_next(CREATE, "timeout", delay=1.5)  # the order goes through; the answer comes too late
    state = await broker.open(intent("t1"))
    assert state.status == "Filled" and state.order_link_id == "pd-t1-o"
    assert len(fake.creates("pd-t1-o")) == 1  # sent exactly once
    assert len(fake.orders("pd-t1-o")) == 1
    assert broker.sends["pd-t1-o"] == 1 and broker.errors["unknown"] == 1

    # the same intent again (a restart, a retry by the caller): the venue's order comes back, nothing is sent
    again = await broker.open(intent("t1"))
    assert again.exchange_order_id == state.exchange_order_id
    assert len(fake.creates("pd-t1-o")) == 1


@pytest.mark.parametrize("kind", ["5xx", "drop"])
async def test_a_failure_before_the_venue_acted_is_retried_exactly_once(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit, kind: str
) -> None:
    broker = make_broker()
    fake.fail_next(CREATE, kind)  # the request dies before the venue sees it
    state = await broker.open(intent("f1"))
    assert state.status == "Filled"
    creates = fake.creates("pd-f1-o")
    assert [c.fault for c in creates] == [kind, None] and creates[1].ret_code == 0  # one retry, after a lookup
    assert len(fake.orders("pd-f1-o")) == 1 and broker.sends["pd-f1-o"] == 2
    lookups = [p for _, p, q in fake.private_requests if q.get("orderLinkId") == "pd-f1-o" and p != CREATE]
    assert lookups[:2] == ["/v5/order/realtime", "/v5/order/history"]  # looked up before the first send...
    assert len(lookups) >= 4  # ...and again before the retry


@pytest.mark.parametrize("kind", ["5xx", "drop"])
async def test_a_failure_after_the_venue_acted_is_not_sent_again(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit, kind: str
) -> None:
    broker = make_broker()
    fake.fail_next(CREATE, kind, act=True)
    state = await broker.open(intent("f2"))
    assert state.status == "Filled"
    assert len(fake.creates("pd-f2-o")) == 1 and len(fake.orders("pd-f2-o")) == 1


async def test_a_duplicate_reply_means_already_sent(make_broker: Callable[..., BybitBroker], fake: FakeBybit) -> None:
    # an earlier run placed it; the query side lags, so the broker's first lookup misses it
    earlier = fake.place_directly({"symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", "qty": "0.012",
                                   "orderLinkId": "pd-d1-o"})
    fake.lag_lookups("pd-d1-o", requests=2)
    broker = make_broker()
    state = await broker.open(intent("d1"))
    assert [c.ret_code for c in fake.creates("pd-d1-o")] == [110072]
    assert state.exchange_order_id == earlier["orderId"] and state.status == "Filled"
    assert len(fake.orders("pd-d1-o")) == 1


async def test_when_no_lookup_succeeds_nothing_is_sent(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit
) -> None:
    broker = make_broker(attempts=3)
    fake.fail_next("/v5/order/realtime", "5xx", count=3)
    with pytest.raises(VenueUnavailable):
        await broker.order("pd-x-o")
    fake.fail_next("/v5/order/realtime", "5xx", count=3)
    with pytest.raises(VenueUnavailable):
        await broker.open(intent("x"))
    assert fake.creates() == []


async def test_close_is_reduce_only_with_its_own_link_id(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit
) -> None:
    broker = make_broker()
    await broker.open(intent("c1"))
    with pytest.raises(ValueError, match="its own link id"):
        await broker.close(OrderIntent("bot1", "c1", "BTCUSDT", "long", Decimal("0.012"), Decimal(5), "pd-c1-o"))
    fake.set_price("BTCUSDT", "101000")
    state = await broker.close(intent("c1", qty="0.012", purpose="close"))
    [create] = fake.creates("pd-c1-c")
    assert create.body == {
        "category": "linear", "symbol": "BTCUSDT", "side": "Sell", "orderType": "Market", "qty": "0.012",
        "positionIdx": 0, "reduceOnly": True, "orderLinkId": "pd-c1-c",
    }
    assert state.reduce_only and state.status == "Filled" and state.avg_price == Decimal("101000")
    assert fake.position("BTCUSDT") is None and await broker.positions() == []
    again = await broker.close(intent("c1", qty="0.012", purpose="close"))  # looked up, not resent
    assert again.exchange_order_id == state.exchange_order_id and len(fake.creates("pd-c1-c")) == 1


# -- account state ------------------------------------------------------------------------------------------


async def test_positions_orders_and_balance_are_decimal_dataclasses(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit
) -> None:
    broker = make_broker()
    await broker.open(intent("p1"))
    fake.set_price("BTCUSDT", "101000")
    [position] = await broker.positions()
    assert position == Position(
        symbol="BTCUSDT", side="long", qty=Decimal("0.012"), entry_price=Decimal("100000"), leverage=Decimal("5"),
        stop_loss=Decimal("95000.00"), take_profit=Decimal("105000.10"), unrealized_pnl=Decimal("12.000"),
        liquidation_price=None, mark_price=Decimal("101000"), opened_at=position.opened_at,
    )
    assert position.opened_at is not None and position.opened_at.tzinfo is not None
    orders = await broker.open_orders()  # the entry is filled: only its TP and SL orders are working
    assert sorted((o.status, o.side, o.reduce_only, o.order_link_id) for o in orders) == [
        ("Untriggered", "Sell", True, ""), ("Untriggered", "Sell", True, ""),
    ]
    balance = await broker.balance()
    assert balance.equity == Decimal("10000") - Decimal("0.66") + Decimal("12.000")
    assert balance.margin_used == Decimal("240") and balance.available == balance.equity - Decimal("240")
    assert balance.unrealized_pnl == Decimal("12.000")


async def test_executions_walk_seven_day_windows_and_cursor_pages(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit, clock: Clock
) -> None:
    broker = make_broker()
    fake.set_fill_parts(101)  # one order sweeping 101 makers: 101 executions sharing one seq
    await broker.open(intent("e1", qty="0.101"))
    clock.now = T0 + timedelta(days=9)
    fake.set_fill_parts(1)
    await broker.open(intent("e2", qty="0.005"))

    fills = await broker.executions(T0 - timedelta(days=1))
    assert len(fills) == 102 and all(isinstance(f, Fill) for f in fills)
    assert sum((f.qty for f in fills[:101]), Decimal(0)) == Decimal("0.101")
    assert len({f.seq for f in fills[:101]}) == 1 and fills[-1].order_link_id == "pd-e2-o"
    assert fills[0].time == T0 and fills[-1].time == T0 + timedelta(days=9)
    queries = [q for _, p, q in fake.private_requests if p == "/v5/execution/list"]
    assert all(int(q["endTime"]) - int(q["startTime"]) <= 7 * 86_400_000 for q in queries)
    assert all(int(q["limit"]) <= 100 for q in queries)
    assert len(queries) == 3  # window 1: two pages (101 rows); window 2: one page


async def test_a_position_closed_by_its_take_profit_while_away(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit, clock: Clock
) -> None:
    broker = make_broker()
    await broker.open(intent("tp1"))
    clock.now = T0 + timedelta(hours=3)
    fake.close_position_by("BTCUSDT", "TakeProfit", push=False)  # nobody is listening

    assert await broker.positions() == []
    assert await broker.open_orders() == []  # the SL order went with the position
    fills = await broker.executions(T0)
    tp_fill = fills[-1]
    assert (tp_fill.stop_order_type, tp_fill.price, tp_fill.qty, tp_fill.side, tp_fill.reduce_only) == (
        "TakeProfit", Decimal("105000.10"), Decimal("0.012"), "Sell", True,
    )
    assert tp_fill.order_link_id is None and tp_fill.time == T0 + timedelta(hours=3)
    [closed] = await broker.closed_pnl(T0)
    gross = (Decimal("105000.10") - Decimal("100000")) * Decimal("0.012")
    fees = (Decimal("105000.10") + Decimal("100000")) * Decimal("0.012") * Decimal("0.00055")
    assert closed.closed_pnl == gross - fees and closed.avg_exit_price == Decimal("105000.10")


# -- the private stream ----------------------------------------------------------------------------------


async def test_stream_delivers_orders_fills_and_positions_once(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit
) -> None:
    broker = make_broker()
    events = Events(broker)
    await wait_until(lambda: all(fake.private_subscribers(t) for t in ("order", "execution", "position")), "subs")
    assert fake.private_auth_keys == [KEY]
    assert sorted(fake.private_subscribe_requests) == [["execution"], ["order"], ["position"]]  # never mixed

    fake.set_fill_parts(3)  # three fills sharing one seq are three fills
    await broker.open(intent("w1", qty="0.012"))
    fills = await events.wait(Fill, 3, order_link_id="pd-w1-o")
    assert len({f.seq for f in fills}) == 1 and sum((f.qty for f in fills), Decimal(0)) == Decimal("0.012")
    [filled] = await events.wait(OrderState, order_link_id="pd-w1-o")
    assert filled.status == "Filled" and filled.avg_price == Decimal("100000")
    [position] = await events.wait(Position)
    assert (position.side, position.qty, position.entry_price, position.take_profit) == (
        "long", Decimal("0.012"), Decimal("100000"), Decimal("105000.10"),
    )

    # Bybit repeats itself: the same executions, a second "Filled" (a cancel racing the fill), a late Cancelled
    fake.push_private("execution", fake.execution_rows(order_link_id="pd-w1-o"))
    [order_row] = fake.orders("pd-w1-o")
    fake.push_private("order", [order_row])
    fake.push_private("order", [{**order_row, "orderStatus": "Cancelled", "updatedTime": "1741003200999"}])
    await wait_until(lambda: broker.stream is not None and broker.stream.duplicates["order"] == 2, "duplicates")
    assert broker.stream is not None and broker.stream.duplicates["execution"] == 3
    await asyncio.sleep(0.1)
    assert len(events.of(Fill, order_link_id="pd-w1-o")) == 3
    assert len(events.of(OrderState, order_link_id="pd-w1-o")) == 1

    # the TP fills while connected: a TakeProfit fill and a flat position
    fake.set_fill_parts(1)
    fake.close_position_by("BTCUSDT", "TakeProfit")
    [tp_fill] = await events.wait(Fill, stop_order_type="TakeProfit")
    assert tp_fill.price == Decimal("105000.10") and tp_fill.reduce_only
    [flat] = await events.wait(Position, qty=Decimal(0))
    assert flat.side == "long" and flat.symbol == "BTCUSDT"
    assert not broker.stream.errors


async def test_malformed_private_messages_are_counted_and_skipped(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="core.exchange.bybit_private")
    broker = make_broker()
    events = Events(broker)
    await wait_until(lambda: fake.private_subscribers("execution") == 1, "subscribed")
    good = {
        "category": "linear", "symbol": "BTCUSDT", "orderId": "o-1", "orderLinkId": "pd-m-o", "side": "Buy",
        "execId": "e-1", "execPrice": "100000", "execQty": "0.001", "execFee": "0.055", "execTime": "1741003200000",
        "execType": "Trade", "stopOrderType": "UNKNOWN", "closedSize": "0", "seq": 77,
    }
    fake.push_private_raw("this is not JSON {")
    fake.push_private_raw([1, 2, 3])
    fake.push_private_message("order", {"topic": "order", "data": "not a list"})
    fake.push_private_message("order", {"topic": "order", "data": [{"symbol": "BTCUSDT"}]})
    fake.push_private_message("execution", {"topic": "execution", "data": [{**good, "execPrice": "NaN"}]})
    fake.push_private_message("execution", {"topic": "execution", "data": [{**good, "execQty": "abc"}, good]})
    fake.push_private_message("position", {"topic": "greeks", "data": []})
    fake.push_private_message("execution", {"topic": "execution", "data": [{**good, "category": "spot", "seq": 78}]})
    stream = broker.stream
    assert stream is not None
    await wait_until(lambda: sum(stream.errors.values()) == 7, "the bad messages to be counted")
    [fill] = await events.wait(Fill)  # the good entry next to a bad one still arrives
    assert fill.exec_id == "e-1" and fill.time == datetime(2025, 3, 3, 12, tzinfo=UTC)
    assert dict(stream.errors) == {
        "bad_json": 1, "bad_shape": 2, "missing_field": 1, "bad_value": 2, "unknown_topic": 1,
    }
    assert fake.private_connections_seen == 1 and stream.connected  # pybit's socket never noticed
    fake.push_private_message("execution", {"topic": "execution", "data": [{**good, "execId": "e-2", "seq": 79}]})
    await events.wait(Fill, 2)
    assert len([r for r in caplog.records if "bad_value" in r.getMessage()]) == 1  # logged once per kind


async def test_stream_comes_back_after_a_dropped_connection(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit
) -> None:
    stream_options = {"watch_interval": 0.05, "reconnect_after": 0.3, "socket_options": {"retries": 2}}
    broker = make_broker(stream_options=stream_options)
    events = Events(broker)
    await wait_until(lambda: fake.private_subscribers("execution") == 1, "subscribed")
    stream = broker.stream
    assert stream is not None

    # an abort: pybit reconnects, authenticates and resubscribes by itself
    fake.drop_private_connections(abrupt=True)
    await wait_until(lambda: fake.private_connections_seen == 2 and fake.private_subscribers("execution") == 1,
                     "pybit's reconnect")
    await wait_until(lambda: stream.auths == 2, "the second auth")
    await broker.open(intent("rc1"))
    await events.wait(Fill, order_link_id="pd-rc1-o")

    # an outage longer than pybit's retries: pybit gives up silently; the watchdog replaces the socket
    fake.refuse_connections()
    fake.drop_private_connections()
    await wait_until(lambda: fake.private_refused >= 2, "pybit's reconnect attempts to be refused")
    await asyncio.sleep(0.5)  # long enough for the watchdog to try too (and be refused)
    assert not stream.connected and stream.reconnects == 0
    fake.refuse_connections(False)
    await wait_until(lambda: stream.reconnects == 1 and fake.private_subscribers("execution") == 1, "the watchdog")
    assert fake.private_connections_seen == 3 and stream.auths == 3
    await broker.open(intent("rc2"))
    await events.wait(Fill, order_link_id="pd-rc2-o")
    assert len(events.of(Fill)) == 2 and set(stream.errors) == {"connect_failed"}


# -- rate limits ----------------------------------------------------------------------------------------


async def test_a_burst_of_creates_is_spaced_by_the_limiter(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit
) -> None:
    broker = make_broker()
    await broker.ensure_leverage("BTCUSDT", Decimal(5))
    states = await asyncio.gather(*(broker.open(intent(f"r{i}", qty="0.001", sl=None, tp=None)) for i in range(25)))
    assert {s.status for s in states} == {"Filled"}
    creates = fake.creates()
    assert len(creates) == 25 and {c.ret_code for c in creates} == {0} and fake.rate_limited == 0
    times = sorted(c.at for c in creates)
    assert times[-1] - times[0] >= 1.9  # 10, 10, 5: the last five wait for the third second
    assert all(times[i + 10] - times[i] >= 0.9 for i in range(len(times) - 10))  # never 11 within a second


async def test_a_rate_limit_answer_pauses_and_retries_without_doubling(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit
) -> None:
    # faster than the venue allows (and queries unthrottled, so that the creates really come in a burst)
    broker = make_broker(order_rate=15, query_rate=1000, rate_limit_pause=0.5, attempts=5)
    await broker.ensure_leverage("BTCUSDT", Decimal(5))
    links = [f"pd-q{i}-o" for i in range(15)]
    await asyncio.gather(*(broker.open(intent(f"q{i}", qty="0.001", sl=None, tp=None)) for i in range(15)))
    assert fake.rate_limited >= 1 and broker.errors["rate_limited"] == fake.rate_limited
    assert all(len(fake.orders(link)) == 1 for link in links)  # everything placed exactly once
    assert sum(1 for c in fake.creates() if c.ret_code == 0) == 15


async def test_http_403_stops_requests_for_a_while(make_broker: Callable[..., BybitBroker], fake: FakeBybit) -> None:
    broker = make_broker(ip_ban_pause=3.0)  # long enough that a loaded machine reaches the next call inside it
    fake.fail_next("/v5/position/list", "403")
    with pytest.raises(VenueUnavailable, match="403"):
        await broker.positions()
    seen = len(fake.private_requests)
    with pytest.raises(VenueUnavailable, match="banned"):
        await broker.balance()
    assert len(fake.private_requests) == seen  # failed fast, nothing sent

    async def answered() -> bool:
        try:
            return (await broker.balance()).equity == Decimal("10000")
        except VenueUnavailable:
            return False

    await wait_until(answered, "requests to resume once the pause is over", within=15, every=0.2)


async def test_rate_limiter_window() -> None:
    limiter = RateLimiter(3, per=0.2)
    started = time.monotonic()
    stamps = []
    for _ in range(7):
        await limiter.acquire()
        stamps.append(time.monotonic() - started)
    assert stamps[2] < 0.1 and stamps[3] >= 0.2 and stamps[6] >= 0.4
    limiter.pause(0.15)
    before = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - before >= 0.15


# -- secrets ------------------------------------------------------------------------------------------------


async def test_secrets_stay_out_of_logs_and_reprs(
    make_broker: Callable[..., BybitBroker], fake: FakeBybit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = make_broker(timeout=0.5)
    events = Events(broker)
    await wait_until(lambda: fake.private_subscribers("order") == 1, "subscribed")
    fake.fail_next(CREATE, "timeout", delay=1.0)
    fake.fail_next("/v5/order/history", "5xx")
    await broker.open(intent("sec"))
    await events.wait(OrderState, order_link_id="pd-sec-o")
    with pytest.raises(OrderRejected):
        await broker.open(intent("sec2", qty="0.0001"))
    assert caplog.records  # there was logging to inspect
    for secret in (KEY, SECRET):
        assert secret not in caplog.text
        assert secret not in repr(broker)
    assert SECRET not in repr(_HTTP(api_key=KEY, api_secret=SECRET))


async def test_set_stop_moves_the_position_stop(make_broker: Callable[..., BybitBroker], fake: FakeBybit) -> None:
    """Trailing stops and breakeven in live mode: the position's stop moves on the exchange, on the tick."""
    broker = make_broker()
    await broker.open(intent("trail1", qty="0.01"))
    before = fake.position("BTCUSDT")
    assert before is not None and Decimal(before["stopLoss"]) < Decimal(99000)
    await broker.set_stop("BTCUSDT", Decimal("99000.00"), "long")
    position = fake.position("BTCUSDT")
    assert position is not None and Decimal(position["stopLoss"]) == Decimal(99000)
    stops = [o for o in fake.orders() if o.get("stopOrderType") == "StopLoss" and o["orderStatus"] == "Untriggered"]
    assert [Decimal(o["triggerPrice"]) for o in stops] == [Decimal(99000)]
