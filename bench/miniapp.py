"""The Mini App's API over 100,000 closed trades in PostgreSQL.

    python -m bench.miniapp

The figures: GET /api/overview and GET /api/trades as the phone sends them (HTTP on loopback to the real
aiohttp app, `Authorization: tma <initData>` validated on each call), p95 of 60 after a first call (which
loads the closed trades' columns once, as the host's start does). The trades pages are a mix: the newest
page, a page 10,000 trades deep (its keyset cursor), and a filtered page (symbol + strategy + exit reason).
The baselines, measured in the same run on the same rows: the naive ways — the overview's PnL windows from
every trade loaded and summarized in Python (core.stats.summarize), and a page cut from every closed trade
loaded as an ORM object, filtered and sorted in Python.

The trades are bench/telegram.py's (one bot, COPY, with the trade_stats_cache row the ledger keeps).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from aiohttp import ClientSession, web
from sqlalchemy import desc, select

from bench.pg import migrated_database
from bench.telegram import BOT, N_TRADES, _fill
from bot.miniapp import mount_miniapp
from bot.miniapp.initdata import sign
from core.desk import Desk
from core.stats import facts_of, summarize
from storage.db import create_engine, session_factory
from storage.desk_store import SqlDeskStore
from storage.models import Trade
from tests.servers import free_port

RUNS = 60
ADMIN = 1
TOKEN = "123456:" + "A" * 35
DEEP = 10_000
EXTRAS: dict[str, Any] = {}


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * len(values)) - 1]


async def _measure(url: str) -> dict[str, float]:
    engine = create_engine(url)
    store = SqlDeskStore(engine)
    desk = Desk(store, None, clock=lambda: datetime.now(UTC))
    app = web.Application()
    mount_miniapp(app, desk, TOKEN, lambda uid: "admin" if uid == ADMIN else None, 86_400)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    user = json.dumps({"id": ADMIN, "first_name": "bench"})
    headers = {"Authorization": "tma " + sign({"user": user, "auth_date": str(int(time.time()))}, TOKEN)}
    async with engine.connect() as conn:  # the cursor of the page DEEP trades back, as the app would hold it
        at, trade_id = (await conn.execute(select(Trade.exit_time, Trade.id).where(Trade.status == "closed")
                                           .order_by(desc(Trade.exit_time), desc(Trade.id))
                                           .offset(DEEP - 1).limit(1))).one()
    pages = ["/api/trades?limit=50", f"/api/trades?limit=50&before={quote(f'{at.isoformat()}|{trade_id}')}",
             "/api/trades?limit=50&symbol=BTCUSDT&strategy=scalp&exit_reason=tp"]
    try:
        async with ClientSession(f"http://127.0.0.1:{port}") as client:
            async def timed(path: str) -> float:
                started = time.perf_counter()
                async with client.get(path, headers=headers) as resp:
                    body = await resp.read()
                    assert resp.status == 200, body[:300]
                return (time.perf_counter() - started) * 1000

            first = await timed("/api/overview")
            async with client.get("/api/overview", headers=headers) as resp:
                doc = await resp.json()
            assert doc["windows"][-1]["figures"]["trades"] == N_TRADES, doc["windows"][-1]
            overview = [await timed("/api/overview") for _ in range(RUNS)]
            for path in pages:
                await timed(path)
            trades = [await timed(pages[i % len(pages)]) for i in range(RUNS)]

        async def naive_overview() -> float:
            started = time.perf_counter()
            for days in (1, 7, 30, None):
                since = datetime.now(UTC) - timedelta(days=days) if days else None
                summarize(await store.facts(None, since), Decimal(10_000))
            return (time.perf_counter() - started) * 1000

        async def naive_page() -> float:
            started = time.perf_counter()
            async with session_factory(engine)() as s:
                rows = (await s.scalars(select(Trade).where(Trade.bot_id == BOT, Trade.status == "closed"))).all()
            chosen = sorted((t for t in rows if t.symbol == "BTCUSDT" and t.strategy == "scalp"),
                            key=lambda t: (t.exit_time, t.id), reverse=True)
            _ = [facts_of(t) for t in chosen[:50]], len(chosen)
            return (time.perf_counter() - started) * 1000

        base_overview = statistics.median([await naive_overview() for _ in range(3)])
        base_page = statistics.median([await naive_page() for _ in range(3)])
        return {"first_ms": first, "overview_p95": _p95(overview), "overview_median": statistics.median(overview),
                "trades_p95": _p95(trades), "trades_median": statistics.median(trades),
                "overview_baseline": base_overview, "trades_baseline": base_page}
    finally:
        await runner.cleanup()
        await engine.dispose()


def run() -> list[dict[str, Any]]:
    with migrated_database("bench_app") as url:
        asyncio.run(_fill(url, N_TRADES))
        m = asyncio.run(_measure(url))
    EXTRAS.update(m)
    return [
        {"name": f"mini app: GET /api/overview over {N_TRADES:,} trades (HTTP, p95)", "figure": m["overview_p95"],
         "unit": "ms", "baseline": m["overview_baseline"], "ratio": m["overview_baseline"] / m["overview_p95"],
         "goal": "p95 < 50 ms", "met": m["overview_p95"] < 50},
        {"name": "mini app: GET /api/trades page (newest, 10,000 deep, filtered; p95)", "figure": m["trades_p95"],
         "unit": "ms", "baseline": m["trades_baseline"], "ratio": m["trades_baseline"] / m["trades_p95"],
         "goal": "p95 < 50 ms", "met": m["trades_p95"] < 50},
    ]


def main() -> int:
    import logging

    from bench.table import print_rows

    logging.getLogger("alembic").setLevel(logging.WARNING)
    rows = run()
    print_rows(rows, title="mini app")
    print(f"medians: overview {EXTRAS['overview_median']:.1f} ms, trades {EXTRAS['trades_median']:.1f} ms; "
          f"first overview after start (columns loaded once): {EXTRAS['first_ms']:,.0f} ms")
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
