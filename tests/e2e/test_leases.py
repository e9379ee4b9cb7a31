"""One trader per bot: two host processes on one PostgreSQL, one bot, a replayed market. Exactly one
trades; SIGKILL it and the other takes over within the lease ttl and carries on with the same ledger,
which ends equal to an uninterrupted replay's — no trade and no order link id twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import text

from core.ledger import ledger_digest
from storage.db import create_engine
from storage.journal import Journal
from storage.ledger import SqlLedger
from tests.conftest import CANDLES
from tests.hostproc import DeskProcess, desk_env, run

DATA = CANDLES / "binance_spot_2020-12_2021-07"
TTL = "6"


async def _ledger(url: str) -> tuple[str, int, int, int]:
    db = create_engine(url, null_pool=True)
    try:
        trades = await SqlLedger(db, Journal(Path("/nonexistent/j"))).closed_trades("main")
        async with db.connect() as conn:
            dup_orders = (await conn.execute(text(
                "SELECT count(*) FROM (SELECT order_link_id FROM orders GROUP BY order_link_id HAVING count(*) > 1) d"
            ))).scalar()
            n_trades = (await conn.execute(text("SELECT count(*) FROM trades"))).scalar()
            n_ids = (await conn.execute(text("SELECT count(DISTINCT id) FROM trades"))).scalar()
        assert n_trades == n_ids
        return ledger_digest(trades), len(trades), int(dup_orders or 0), int(n_trades or 0)
    finally:
        await db.dispose()


def test_one_trader_per_bot_and_takeover(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    reference = run(["replay", "--data", str(DATA), "--symbols", "BTCUSDT,ETHUSDT", "--bot", "main", "--no-ml",
                     "--db", f"sqlite:///{tmp_path}/ref.db", "--json"], tmp_path, desk_env(), timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]
    want = json.loads(reference.stdout.strip().splitlines()[-1])

    env = desk_env(DATABASE_URL=pg_url, REDIS_URL=redis_url, SECRET_KEY="k" * 40, MARKET_FEED="replay",
                   FEED_DATA=str(DATA), FEED_SPEED="12000", DEFAULT_SYMBOLS="BTCUSDT,ETHUSDT", LEASE_TTL_S=TTL)
    assert run(["migrate"], tmp_path, env).returncode == 0
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a = DeskProcess(a_dir, dict(env)).start()
    b: DeskProcess | None = None
    try:
        a.wait_healthy(until=lambda body: [x for x in body["bots"] if x["running_here"]])
        b = DeskProcess(b_dir, dict(env)).start()
        b_body = b.wait_healthy(until=lambda body: body["standby_bots"])  # its bots loaded: a standby
        assert b_body["standby_bots"] == ["main"] and not [x for x in b_body["bots"] if x["running_here"]]
        assert b_body["feed"] == "off"  # the standby consumes nothing of the replayed market
        a_body = a.wait_healthy(until=lambda body: body["bots"][0].get("candles", 0) > 20_000)  # A trades a while
        assert a_body["feed"] == "running", "A finished before it could be killed"
        a.kill()  # SIGKILL: no shutdown, no release
        # B takes over within the lease ttl (and a margin for this machine's load)
        b.wait_healthy(timeout=float(TTL) + 10, until=lambda body: [x for x in body["bots"] if x["running_here"]])
        b.wait_drained()
        digest, trades, dup_orders, _ = asyncio.run(_ledger(pg_url))
        assert dup_orders == 0
        assert trades == want["trades_closed"] > 0
        assert digest == want["ledger_digest"]
        assert "lease taken: bot main" in b.output
    finally:
        a.kill()
        if b is not None:
            assert b.terminate(timeout=20)[0] == 0
