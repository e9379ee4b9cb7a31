"""BybitFeed end to end: the real pybit client (WebSocket threads, HTTP) against FakeBybit on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.market import bybit_feed
from core.market.bybit_feed import BybitFeed
from core.market.candle import INTERVAL_MS, Candle
from core.market.sanity import Refusal
from tests.fakes.bybit import FakeBybit, kline_entry
from tests.fakes.clock import Clock as BaseClock
from tests.fakes.clock import threads_stopped, wait_until

T0 = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday 00:00, so every interval's candles line up on it


def open_time(interval: str, index: int) -> datetime:
    return T0 + timedelta(milliseconds=INTERVAL_MS[interval] * index)


def candle(symbol: str, interval: str, index: int) -> Candle:
    """Deterministic candle number `index` of a series."""
    base = 100.0 + (sum(map(ord, symbol)) % 50) + index * 0.5
    volume = 10.0 + index
    return Candle(
        symbol, interval, open_time(interval, index), base, base + 1.0, base - 1.0, base + 0.25, volume, volume * base
    )


def series(symbol: str, interval: str, upto: int, start: int = 0) -> list[Candle]:
    """Candles start..upto inclusive."""
    return [candle(symbol, interval, i) for i in range(start, upto + 1)]


class Clock(BaseClock):
    def inside(self, interval: str, index: int, seconds: float = 10) -> None:
        """Now = `seconds` into candle `index` (so `index` is the open candle and index-1 the newest closed)."""
        self.now = open_time(interval, index) + timedelta(seconds=seconds)


class Collector:
    """Consumes feed.stream() in a task so the test can push, then take what arrived."""

    def __init__(self, feed: BybitFeed) -> None:
        self.feed = feed
        self.got: list[Candle] = []
        self._taken = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for c in self.feed.stream():
            self.got.append(c)

    async def take(self, n: int, within: float = 5.0) -> list[Candle]:
        want = self._taken + n
        await wait_until(lambda: len(self.got) >= want or self.task.done(), f"{n} candles", within)
        if self.task.done() and len(self.got) < want:
            self.task.result()  # raise what ended the stream
            raise AssertionError("the stream ended")
        out, self._taken = self.got[self._taken : want], want
        return out

    async def assert_quiet(self, seconds: float = 0.3) -> None:
        await asyncio.sleep(seconds)
        assert self.got[self._taken :] == [], "unexpected candles"


def topics(symbols: list[str], intervals: tuple[str, ...]) -> set[str]:
    return {f"kline.{i}.{s}" for s in symbols for i in intervals}


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeBybit]:
    with FakeBybit(clock) as server:
        yield server


@pytest.fixture
async def make_feed(fake: FakeBybit, clock: Clock) -> AsyncIterator[Callable[..., BybitFeed]]:
    """BybitFeed factory pointed at the fake; closes every feed and checks no pybit thread survives."""
    before = set(threading.enumerate())
    feeds: list[BybitFeed] = []

    def make(symbols: list[str], intervals: tuple[str, ...] = ("15", "3"), **options: Any) -> BybitFeed:
        options = {"clock": clock, "ws_url": fake.ws_url, "rest_url": fake.url, "silence_timeout": 2.0, **options}
        feed = BybitFeed(symbols, intervals, **options)
        feeds.append(feed)
        return feed

    yield make
    for feed in feeds:
        await feed.close()

    await threads_stopped(before, "pybit threads to stop")


async def test_only_confirmed_klines_become_candles(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock
) -> None:
    clock.inside("15", 6)  # candles 4 and 5 have closed (a confirmed kline that has not is refused)
    feed = make_feed(["BTCUSDT", "ETHUSDT"])
    got = Collector(feed)
    await wait_until(lambda: all(fake.subscribers(t) for t in topics(["BTCUSDT", "ETHUSDT"], ("15", "3"))), "subs")

    k = Candle("BTCUSDT", "15", open_time("15", 4), 43210.5, 43300.0, 43100.25, 43250.75, 12.345, 533_456.78)
    assert fake.push_kline(k, confirm=False) == 1
    assert fake.push_kline(k) == 1
    [first] = await got.take(1)
    assert first == k
    assert first.open_time.tzinfo is not None and first.open_time == datetime(2025, 1, 6, 1, 0, tzinfo=UTC)
    assert isinstance(first.close, float) and first.turnover == 533_456.78

    # a push carrying several entries: the closed one goes on, the open one does not
    nxt, opening = candle("BTCUSDT", "15", 5), candle("BTCUSDT", "15", 6)
    fake.push_message(
        "kline.15.BTCUSDT",
        {
            "topic": "kline.15.BTCUSDT",
            "type": "snapshot",
            "ts": 1,
            "data": [kline_entry(nxt, confirm=True), kline_entry(opening, confirm=False)],
        },
    )
    assert await got.take(1) == [nxt]
    await got.assert_quiet()
    assert not feed.errors


async def test_symbols_are_sharded_over_connections(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock
) -> None:
    clock.inside("15", 2)  # candle 1 of both intervals has closed
    symbols = [f"S{i:03d}USDT" for i in range(210)]
    feed = make_feed(symbols, ("15", "3"), symbols_per_connection=50)
    got = Collector(feed)
    expected = topics(symbols, ("15", "3"))
    await wait_until(lambda: set(fake.subscribed) == expected, "every topic subscribed")

    assert fake.connections_seen == 5 == len(feed.shards)
    assert all(n == 1 for n in fake.subscribed.values())  # each topic on exactly one connection
    # shards connect concurrently, so match them to connections as sets
    per_connection = {frozenset(seen) for seen in fake.connection_topics}
    assert per_connection == {frozenset(topics(list(shard), ("15", "3"))) for shard in feed.shards}
    assert all(len(seen) <= 100 for seen in per_connection)

    pushes = [candle(s, i, 1) for s in symbols for i in ("15", "3")]
    assert fake.push_klines(pushes) == 420
    received = await got.take(420)
    assert sorted(received, key=lambda c: (c.symbol, c.interval)) == sorted(
        pushes, key=lambda c: (c.symbol, c.interval)
    )
    await got.assert_quiet()
    assert not feed.errors and feed.stats()["connected"] == 5


@pytest.mark.parametrize("abrupt", [False, True], ids=["close-frame", "tcp-abort"])
async def test_dropped_connection_recovers_and_backfills_the_outage(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock, abrupt: bool
) -> None:
    symbols = ["BTCUSDT", "ETHUSDT"]
    clock.inside("3", 8)
    for s in symbols:
        fake.set_history(s, "3", series(s, "3", 8))  # 8 is the open candle
    feed = make_feed(symbols, ("3",), last_seen={(s, "3"): open_time("3", 5) for s in symbols})
    got = Collector(feed)

    # first connect: everything after last_seen that has closed (6, 7; the open 8 is not closed)
    first = await got.take(4)
    assert sorted((c.symbol, c.open_time) for c in first) == [(s, open_time("3", i)) for s in symbols for i in (6, 7)]

    # the outage: 8, 9 and 10 close while nobody listens
    clock.inside("3", 11)
    for s in symbols:
        fake.add_candles(series(s, "3", 11, start=8))
    assert fake.drop_connections(abrupt=abrupt) == 1
    await wait_until(lambda: fake.connections_seen == 2 and fake.subscribers("kline.3.BTCUSDT") == 1, "reconnect")

    backfilled = await got.take(6)
    for s in symbols:
        assert [c for c in backfilled if c.symbol == s] == series(s, "3", 10, start=8)

    # live again: a repeat of 10 is dropped, 11 goes on
    clock.inside("3", 12)
    fake.push_klines([candle("BTCUSDT", "3", 10), candle("BTCUSDT", "3", 11)])
    assert await got.take(1) == [candle("BTCUSDT", "3", 11)]
    await got.assert_quiet()

    btc = [c.open_time for c in got.got if c.symbol == "BTCUSDT"]
    assert btc == [open_time("3", i) for i in range(6, 12)]  # gap-free, ordered, no duplicates
    assert feed.duplicates >= 1 and feed.reconnects == 0  # pybit reconnected by itself
    assert not feed.errors


async def test_outage_longer_than_pybit_retries_is_recovered_by_the_watchdog(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock
) -> None:
    clock.inside("3", 8)
    fake.set_history("BTCUSDT", "3", series("BTCUSDT", "3", 8))
    feed = make_feed(["BTCUSDT"], ("3",), silence_timeout=1.0, connect_retries=2)
    got = Collector(feed)
    await wait_until(lambda: fake.subscribers("kline.3.BTCUSDT") == 1, "subscribed")
    fake.push_kline(candle("BTCUSDT", "3", 7))
    assert await got.take(1) == [candle("BTCUSDT", "3", 7)]

    fake.refuse_connections()
    fake.drop_connections()  # pybit's own reconnect attempts are refused and it gives up
    await wait_until(lambda: feed.errors["connect_failed"] >= 1, "a refused watchdog reconnect", within=5)
    clock.inside("3", 10)
    fake.add_candles(series("BTCUSDT", "3", 10, start=8))
    fake.refuse_connections(False)

    assert await got.take(2, within=8) == series("BTCUSDT", "3", 9, start=8)
    assert feed.reconnects >= 1 and fake.subscribers("kline.3.BTCUSDT") == 1
    await got.assert_quiet()


async def test_silent_connection_is_replaced_by_the_watchdog(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock
) -> None:
    clock.inside("15", 8)
    fake.set_history("BTCUSDT", "15", series("BTCUSDT", "15", 8))
    feed = make_feed(["BTCUSDT"], ("15",), silence_timeout=1.0, last_seen={("BTCUSDT", "15"): open_time("15", 6)})
    got = Collector(feed)
    assert await got.take(1) == [candle("BTCUSDT", "15", 7)]

    fake.go_silent()  # the socket stays open but says nothing, not even pongs
    clock.inside("15", 11)
    fake.add_candles(series("BTCUSDT", "15", 11, start=8))
    assert fake.push_kline(candle("BTCUSDT", "15", 8)) == 0  # pushed into the void
    started = time.monotonic()
    await wait_until(lambda: fake.connections_seen == 2, "the watchdog's new connection", within=5)
    assert time.monotonic() - started >= 0.5  # it waited for the silence to last

    assert await got.take(3) == series("BTCUSDT", "15", 10, start=8)  # the missed ones, from REST
    assert feed.reconnects == 1
    clock.inside("15", 12)
    fake.push_kline(candle("BTCUSDT", "15", 11))
    assert await got.take(1) == [candle("BTCUSDT", "15", 11)]
    await got.assert_quiet()
    assert not feed.errors


async def test_bad_messages_and_handler_errors_do_not_stop_the_stream(
    make_feed: Callable[..., BybitFeed],
    fake: FakeBybit,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="core.market.bybit_feed")
    clock.inside("15", 10)
    fake.set_history("BTCUSDT", "15", series("BTCUSDT", "15", 10))
    feed = make_feed(["BTCUSDT"], ("15",))
    got = Collector(feed)
    await wait_until(lambda: fake.subscribers("kline.15.BTCUSDT") == 1, "subscribed")
    fake.push_kline(candle("BTCUSDT", "15", 5))
    assert await got.take(1) == [candle("BTCUSDT", "15", 5)]

    topic = "kline.15.BTCUSDT"
    entry = kline_entry(candle("BTCUSDT", "15", 6), confirm=True)
    fake.push_raw("this is not JSON {")
    fake.push_raw("]] neither is this")
    fake.push_raw([1, 2, 3])
    fake.push_raw({"hello": "world"})
    fake.push_message(topic, {"topic": topic, "data": {"not": "a list"}})
    fake.push_message(topic, {"topic": topic, "data": [{k: v for k, v in entry.items() if k != "close"}]})
    fake.push_message(topic, {"topic": topic, "data": [{**entry, "open": "abc"}]})
    fake.push_message(topic, {"topic": topic, "data": [{**entry, "high": "NaN"}]})  # parses, but is not sane
    fake.push_raw({"topic": "kline.15.XRPUSDT", "data": [entry]})
    fake.push_raw({"topic": "tickers.BTCUSDT", "data": {}})
    await wait_until(lambda: sum(feed.errors.values()) == 9, "the bad messages to be counted")
    assert feed.refused == Counter({Refusal.NOT_FINITE: 1})

    # the parser blows up once, on candle 6; candle 7 then arrives with a hole before it, filled from REST
    real_parse = bybit_feed.parse_kline
    calls = {"n": 0}

    def flaky_parse(t: str, e: Any, **options: Any) -> Candle | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("parser bug")
        return real_parse(t, e, **options)

    monkeypatch.setattr(bybit_feed, "parse_kline", flaky_parse)
    fake.push_kline(candle("BTCUSDT", "15", 6))
    fake.push_kline(candle("BTCUSDT", "15", 7))
    assert await got.take(2) == series("BTCUSDT", "15", 7, start=6)
    await got.assert_quiet()

    assert dict(feed.errors) == {
        "bad_json": 2,
        "bad_shape": 3,
        "missing_field": 1,
        "bad_value": 1,
        "unknown_topic": 2,
        "handler_error": 1,
    }
    assert fake.connections_seen == 1  # pybit's socket never noticed
    logged = [r for r in caplog.records if "bad_json" in r.getMessage()]
    assert len(logged) == 1  # once per kind per hour
    clock.now += timedelta(hours=1, seconds=1)
    fake.push_raw("still not JSON")
    await wait_until(lambda: feed.errors["bad_json"] == 3, "the third bad JSON")
    assert len([r for r in caplog.records if "bad_json" in r.getMessage()]) == 2


async def test_history_is_closed_oldest_first_and_paginated(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock
) -> None:
    clock.inside("3", 2599, seconds=30)
    fake.set_history("BTCUSDT", "3", series("BTCUSDT", "3", 2599))  # 2599 is open, the newest row
    feed = make_feed(["BTCUSDT"], ("3",))

    few = await feed.history("BTCUSDT", "3", 10)
    assert few == series("BTCUSDT", "3", 2598, start=2589)
    assert len(fake.kline_requests) == 1

    fake.kline_requests.clear()
    many = await feed.history("BTCUSDT", "3", 2500)
    assert many == series("BTCUSDT", "3", 2598, start=99)
    assert len(fake.kline_requests) == 3 and all(int(q["limit"]) <= 1000 for q in fake.kline_requests)

    everything = await feed.history("BTCUSDT", "3", 5000)  # more than exists: stops at the listing
    assert everything == series("BTCUSDT", "3", 2598)

    # the open candle is dropped by its end time, also when it is not the newest row the server sends
    clock.inside("3", 2598, seconds=30)
    assert (await feed.history("BTCUSDT", "3", 3)) == series("BTCUSDT", "3", 2597, start=2595)


async def test_stream_resumes_right_after_history(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock
) -> None:
    clock.inside("15", 20)
    fake.set_history("ETHUSDT", "15", series("ETHUSDT", "15", 20))
    feed = make_feed(["ETHUSDT"], ("15",))
    warm = await feed.history("ETHUSDT", "15", 5)
    assert warm[-1] == candle("ETHUSDT", "15", 19)

    # two candles close before the stream starts; the first subscribe backfills exactly those
    clock.inside("15", 22)
    fake.add_candles(series("ETHUSDT", "15", 22, start=21))
    got = Collector(feed)
    assert await got.take(2) == series("ETHUSDT", "15", 21, start=20)
    fake.push_klines([candle("ETHUSDT", "15", 19), candle("ETHUSDT", "15", 21)])  # old news
    await got.assert_quiet()
    assert feed.duplicates == 2


async def test_close_ends_the_stream_and_every_socket(make_feed: Callable[..., BybitFeed], fake: FakeBybit) -> None:
    feed = make_feed([f"S{i}USDT" for i in range(6)], ("3",), symbols_per_connection=2)
    got = Collector(feed)
    await wait_until(lambda: fake.open_connections == 3, "three connections")
    await feed.close()
    await asyncio.wait_for(got.task, 5)  # the stream returned
    await wait_until(lambda: fake.open_connections == 0, "the server to see them closed")
    await feed.close()  # idempotent


async def test_failed_backfill_is_counted_and_the_next_live_candle_fills_the_hole(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock
) -> None:
    clock.inside("3", 6)
    fake.set_history("SOLUSDT", "3", series("SOLUSDT", "3", 6))
    feed = make_feed(["SOLUSDT"], ("3",))
    got = Collector(feed)
    await wait_until(lambda: fake.subscribers("kline.3.SOLUSDT") == 1, "subscribed")
    fake.push_kline(candle("SOLUSDT", "3", 5))
    assert await got.take(1) == [candle("SOLUSDT", "3", 5)]

    clock.inside("3", 9)
    fake.add_candles(series("SOLUSDT", "3", 9, start=6))
    fake.fail_kline_requests(1)
    fake.drop_connections()  # the reconnect backfill (6, 7) fails: REST is down for one request
    await wait_until(lambda: feed.errors["backfill_failed"] == 1, "the failed backfill")
    await got.assert_quiet()

    clock.inside("3", 10)
    fake.push_kline(candle("SOLUSDT", "3", 9))  # 8 closed unpushed too; the hole 6..8 comes from REST first
    assert await got.take(4) == series("SOLUSDT", "3", 9, start=6)
    assert dict(feed.errors) == {"backfill_failed": 1}


WEEK = 7 * 96  # 15m candles in a week


async def test_absurd_and_future_klines_are_refused_and_the_real_ones_still_flow(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="core.market.bybit_feed")
    clock.inside("15", 6)
    fake.set_history("BTCUSDT", "15", series("BTCUSDT", "15", 6))
    feed = make_feed(["BTCUSDT"], ("15",))
    got = Collector(feed)
    await wait_until(lambda: fake.subscribers("kline.15.BTCUSDT") == 1, "subscribed")
    fake.push_kline(candle("BTCUSDT", "15", 5))
    assert await got.take(1) == [candle("BTCUSDT", "15", 5)]

    # candle 6 closes with a volume of 1e160 (it used to kill the bot in the indicators), then a kline that
    # says it is confirmed but closes a week from now (it used to make every real candle a "duplicate")
    clock.inside("15", 7)
    absurd = replace(candle("BTCUSDT", "15", 6), volume=1e160)
    fake.push_klines([absurd, candle("BTCUSDT", "15", 6 + WEEK), replace(absurd, volume=2e160)])
    await wait_until(lambda: sum(feed.refused.values()) == 3, "the three refusals")
    assert feed.refused == Counter({Refusal.VOLUME_TOO_LARGE: 2, Refusal.NOT_CLOSED: 1})
    await got.assert_quiet()

    # the next real candle leaves a hole where 6 was refused: the real 6 comes from REST first, then 7, 8
    fake.add_candles(series("BTCUSDT", "15", 7, start=6))
    clock.inside("15", 8)
    fake.push_kline(candle("BTCUSDT", "15", 7))
    assert await got.take(2) == series("BTCUSDT", "15", 7, start=6)
    clock.inside("15", 9)
    fake.push_kline(candle("BTCUSDT", "15", 8))
    assert await got.take(1) == [candle("BTCUSDT", "15", 8)]
    await got.assert_quiet()

    assert feed.duplicates == 0 and not feed.errors and feed.stats()["refused"] == 3
    assert not got.task.done() and fake.connections_seen == 1
    logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len([m for m in logged if "volume_too_large" in m]) == 1  # twice refused, logged once (rate limit)
    assert len([m for m in logged if "not_closed" in m]) == 1


async def test_absurd_rest_rows_are_refused_in_history_and_backfill(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock
) -> None:
    clock.inside("3", 10)
    rows = series("BTCUSDT", "3", 10)  # 10 is the open candle
    rows[4] = replace(rows[4], volume=1e160)
    rows[7] = replace(rows[7], high=rows[7].low - 1.0)
    fake.set_history("BTCUSDT", "3", rows)
    feed = make_feed(["BTCUSDT"], ("3",))
    warm = await feed.history("BTCUSDT", "3", 10)
    assert [c.open_time for c in warm] == [open_time("3", i) for i in range(10) if i not in (4, 7)]
    assert feed.refused == Counter({Refusal.VOLUME_TOO_LARGE: 1, Refusal.HIGH_BELOW_LOW: 1})

    # the reconnect backfill refuses the same way and carries on with the sane rows
    clock.inside("3", 14)
    fake.add_candles([*series("BTCUSDT", "3", 14, start=11), replace(candle("BTCUSDT", "3", 12), open=-1.0)])
    got = Collector(feed)
    assert await got.take(3) == [candle("BTCUSDT", "3", i) for i in (10, 11, 13)]
    assert feed.refused[Refusal.PRICE_NOT_POSITIVE] == 1 and not feed.errors


async def test_a_last_seen_from_the_future_is_ignored(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock
) -> None:
    """An older version stored a candle from the future: it must not make the feed drop a week of real ones."""
    clock.inside("15", 6)
    fake.set_history("BTCUSDT", "15", series("BTCUSDT", "15", 6))
    feed = make_feed(["BTCUSDT"], ("15",), last_seen={("BTCUSDT", "15"): open_time("15", 6 + WEEK)})
    assert feed.refused == Counter({Refusal.NOT_CLOSED: 1})
    got = Collector(feed)
    await wait_until(lambda: fake.subscribers("kline.15.BTCUSDT") == 1, "subscribed")
    clock.inside("15", 7)
    fake.push_kline(candle("BTCUSDT", "15", 6))
    assert await got.take(1) == [candle("BTCUSDT", "15", 6)]
    assert feed.duplicates == 0
