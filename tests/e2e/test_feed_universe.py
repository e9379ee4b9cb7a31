"""The live feed follows a changing universe: symbols are subscribed and unsubscribed on the open connections
(the real pybit client against FakeBybit), with no reconnect, and a new symbol resumes from its warm-up."""

from __future__ import annotations

from collections.abc import Callable

from core.market.bybit_feed import BybitFeed
from tests.e2e.test_bybit_feed import Clock, Collector, candle, clock, fake, make_feed, open_time, series, topics
from tests.fakes.bybit import FakeBybit
from tests.fakes.clock import wait_until

__all__ = ["clock", "fake", "make_feed"]  # fixtures shared with the feed's own tests

INTERVALS = ("15", "3")


async def test_symbols_join_and_leave_on_open_connections(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock
) -> None:
    clock.inside("15", 2)
    first = [f"A{i:02d}USDT" for i in range(5)]
    feed = make_feed(first, INTERVALS, symbols_per_connection=4)
    got = Collector(feed)
    await wait_until(lambda: fake.topics_now() == topics(first, INTERVALS), "the first universe subscribed")
    assert fake.connections_seen == 2  # 4 + 1

    # one leaves, two join: the shard with room takes them (4 + 2 after the removal), no new connection
    await feed.remove_symbols(["A01USDT"])
    added = await feed.add_symbols(["NEWUSDT", "A00USDT", "N2USDT"])  # A00USDT is streamed already
    assert added == ["NEWUSDT", "N2USDT"]
    now = [s for s in first if s != "A01USDT"] + ["NEWUSDT", "N2USDT"]
    await wait_until(lambda: fake.topics_now() == topics(now, INTERVALS), "the new universe subscribed")
    assert fake.connections_seen == 2 and fake.open_connections == 2 and feed.reconnects == 0
    assert fake.unsubscribe_requests == [sorted(topics(["A01USDT"], INTERVALS))]
    assert all(n == 1 for n in fake.subscribed.values())  # nothing subscribed twice

    # the new symbols' candles come; the one that left is not delivered, and its late push is no error
    fake.push_klines([candle("NEWUSDT", "15", 1), candle("A01USDT", "15", 1), candle("A00USDT", "15", 1)])
    assert {c.symbol for c in await got.take(2)} == {"NEWUSDT", "A00USDT"}
    await got.assert_quiet()
    assert not feed.errors


async def test_a_full_feed_opens_one_connection_and_an_emptied_shard_closes(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock
) -> None:
    clock.inside("15", 2)
    feed = make_feed(["A00USDT", "A01USDT"], INTERVALS, symbols_per_connection=2)
    Collector(feed)
    await wait_until(lambda: fake.open_connections == 1 and fake.topics_now(), "one connection")
    await feed.add_symbols(["B00USDT", "B01USDT", "B02USDT"])
    want = ["A00USDT", "A01USDT", "B00USDT", "B01USDT", "B02USDT"]
    await wait_until(lambda: fake.topics_now() == topics(want, INTERVALS), "three shards subscribed")
    assert fake.connections_seen == 3 and len(feed.shards) == 3

    await feed.remove_symbols(["A00USDT", "A01USDT"])  # the first shard has nothing left: closed
    await wait_until(lambda: fake.open_connections == 2, "the empty shard's connection closed")
    assert fake.topics_now() == topics(["B00USDT", "B01USDT", "B02USDT"], INTERVALS)
    clock.now = open_time("15", 3)  # the watchdog does not reopen the empty shard
    await wait_until(lambda: feed.stats()["connected"] == 2, "two connected shards")
    assert fake.connections_seen == 3 and feed.reconnects == 0

    await feed.add_symbols(["C00USDT"])  # room in the B shards first
    await wait_until(lambda: "kline.15.C00USDT" in fake.topics_now(), "C00USDT subscribed")
    assert fake.connections_seen == 3


async def test_a_new_symbol_resumes_after_its_warm_up(
    make_feed: Callable[..., BybitFeed], fake: FakeBybit, clock: Clock
) -> None:
    """The warm-up history ends at candle 3; the subscribe reply backfills 4..5 from REST, then live 6 follows."""
    clock.inside("15", 6)
    for interval in INTERVALS:
        fake.set_history("NEWUSDT", interval, series("NEWUSDT", interval, 5))
    feed = make_feed(["A00USDT"], ("15",))
    got = Collector(feed)
    await wait_until(lambda: fake.topics_now() == topics(["A00USDT"], ("15",)), "subscribed")
    history = await feed.history("NEWUSDT", "15", 4)
    assert [c.open_time for c in history] == [open_time("15", i) for i in range(2, 6)]
    warm = history[:2]  # as if the warm-up had ended at candle 3
    await feed.add_symbols(["NEWUSDT"], {("NEWUSDT", "15"): warm[-1].open_time})
    assert [c.open_time for c in await got.take(2)] == [open_time("15", 4), open_time("15", 5)]
    clock.inside("15", 7)
    fake.push_kline(candle("NEWUSDT", "15", 6))
    assert [c.open_time for c in await got.take(1)] == [open_time("15", 6)]
    assert not feed.errors

