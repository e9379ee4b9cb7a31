"""Faults show and heal, in the host's runtime on SQLite with GET /health served as in production.

A market feed that dies turns /health 503 (its body says the feed failed, and why), is reported once to the
operator and logged once with its traceback (a second failure in a row only as a warning), and comes back
by itself: the restarted feed replays from the start, and the bot gets every candle exactly once. A bot
whose task died turns /health 503 naming the bot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.health import health_routes
from bot.host import Host
from bot.runtime import Runtime
from bot.settings import load_settings
from core.engine import CandleResult
from core.market.candle import Candle
from core.market.synthetic import SyntheticFeed
from core.trader import Notice
from storage import migrations
from storage.db import create_engine
from tests.fakes.clock import wait_until

Health = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


def _market() -> SyntheticFeed:
    return SyntheticFeed(start=datetime(2026, 1, 1, tzinfo=UTC), intervals=("15", "5"), days=2, warmup_days=1)


class Breaks:
    """The market, broken after `after` candles (a socket that died mid-stream)."""

    def __init__(self, after: int) -> None:
        self.after = after

    async def stream(self) -> AsyncIterator[Candle]:
        n = 0
        async for candle in _market().stream():
            if n == self.after:
                raise ConnectionError("market socket closed")
            n += 1
            yield candle


async def _desk(tmp_path: Path, sqlite_url: str, notices: list[Notice]) -> tuple[Runtime, Host]:
    settings = load_settings(database_url=sqlite_url, data_dir=tmp_path / "var", market_feed="synthetic",
                             secret_key="k" * 40)
    await asyncio.to_thread(migrations.upgrade, settings.database_url)
    db = create_engine(settings.database_url, null_pool=True)
    runtime = Runtime(settings, db, None, notices.append)
    runtime.feed_retry_s = 0.05
    return runtime, Host(settings=settings, db=db, runtime=runtime)


async def _served(host: Host, test: Callable[[Health], Awaitable[None]]) -> None:
    app = web.Application()
    health_routes(app, host)
    async with TestClient(TestServer(app)) as client:
        async def health() -> tuple[int, dict[str, Any]]:
            resp = await client.get("/health")
            return resp.status, await resp.json()

        await test(health)


async def test_a_dead_feed_shows_and_comes_back(tmp_path: Path, sqlite_url: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="phantomdesk.runtime")
    notices: list[Notice] = []
    runtime, host = await _desk(tmp_path, sqlite_url, notices)
    back = asyncio.Event()
    calls = 0

    async def source() -> Any:  # the runtime's feed source, fault-injected
        nonlocal calls
        calls += 1
        if calls == 1:
            return Breaks(after=300)
        if calls == 2:
            raise OSError("connection refused")  # a second failure in a row
        await back.wait()
        return _market()

    runtime._feed_source = source  # type: ignore[method-assign]
    total = len(_market())

    async def test(health: Health) -> None:
        await runtime.start()
        bot = runtime.bots["main"]
        await wait_until(lambda: calls == 3, "the feed to fail twice and try again", 10)
        status, body = await health()
        assert status == 503 and body["status"] == "error" and body["feed"] == "failed", body
        assert body["faults"] == ["feed: OSError: connection refused"]
        assert bot.processed <= 300

        back.set()
        await wait_until(lambda: runtime.feed_state() == "done" and bot.processed == total and bot.queue.empty(),
                         "the restarted feed to deliver the whole market", 60)
        status, body = await health()
        assert status == 200 and body["feed"] == "done" and body["faults"] == [] and body["feed_restarts"] == 2, body
        assert bot.engine.counters["duplicates"] == 0  # what the first feed had sent was not sent again

    try:
        await _served(host, test)
    finally:
        await runtime.stop()
        await host.db.dispose()
    assert [n.kind for n in notices if n.kind == "feed_failed"] == ["feed_failed"]
    assert "ConnectionError: market socket closed" in next(n.text for n in notices if n.kind == "feed_failed")
    failures = [r for r in caplog.records if r.getMessage().startswith("market feed failed")]
    assert [bool(r.exc_info) for r in failures] == [True, False]  # one traceback; then a one-line warning
    assert "2 in a row" in failures[1].getMessage()
    assert any(r.getMessage() == "market feed running again" for r in caplog.records)


async def test_a_dead_bot_shows(tmp_path: Path, sqlite_url: str) -> None:
    notices: list[Notice] = []
    runtime, host = await _desk(tmp_path, sqlite_url, notices)
    seen = 0

    def explode(bot_id: str, result: CandleResult) -> None:
        nonlocal seen
        seen += 1
        if seen == 100:
            raise RuntimeError("strategy exploded")

    runtime.on_result.append(explode)

    async def test(health: Health) -> None:
        await runtime.start()
        bot = runtime.bots["main"]
        await wait_until(lambda: bot.error is not None, "the bot to die", 30)
        status, body = await health()
        assert status == 503 and body["status"] == "error", body
        assert body["faults"] == ["bot main: RuntimeError: strategy exploded"]
        assert [b["error"] for b in body["bots"]] == ["RuntimeError: strategy exploded"]

    try:
        await _served(host, test)
    finally:
        await runtime.stop()
        await host.db.dispose()
    assert [n.kind for n in notices if n.kind == "bot_failed"] == ["bot_failed"]


async def test_a_live_feed_that_hears_nothing_shows(tmp_path: Path, sqlite_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline (or Bybit unreachable), the live feed keeps retrying without a word from the server: /health
    says it is not receiving, instead of "ok / feed running"."""
    import bot.runtime as runtime_module
    from tests.fakes.bybit import FakeBybit

    monkeypatch.setattr(runtime_module, "FEED_SILENT_S", 0.5)
    settings = load_settings(database_url=sqlite_url, data_dir=tmp_path / "var", market_feed="bybit",
                             secret_key="k" * 40)
    await asyncio.to_thread(migrations.upgrade, settings.database_url)
    db = create_engine(settings.database_url, null_pool=True)
    with FakeBybit() as fake:  # its REST answers the backfill; Bybit's stream cannot be reached from here
        runtime = Runtime(settings.model_copy(update={"bybit_rest_url": fake.url}), db, None, lambda n: None)
        host = Host(settings=settings, db=db, runtime=runtime)

        async def test(health: Health) -> None:
            await runtime.start()
            await wait_until(lambda: runtime.feed_state() == "not receiving", "the feed to count as silent", 15)
            status, body = await health()
            assert status == 503 and body["feed"] == "not receiving", body
            assert any("no market data from Bybit" in f for f in body["faults"]), body

        try:
            await _served(host, test)
        finally:
            await runtime.stop()
            await db.dispose()
