"""Bots spread across replicas: three desk processes on one PostgreSQL share six bots two each; SIGKILL one
and its bots are taken over within the lease ttl; start it again and they rebalance. No bot is ever traded
by two processes at once, and the ledger equals a single process's run over the same market."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import yaml
from sqlalchemy import text

from core.ledger import ledger_digest
from storage.db import create_engine
from storage.journal import Journal
from storage.ledger import SqlLedger
from tests.conftest import CANDLES, _admin
from tests.hostproc import DeskProcess, desk_env, run

BOTS = [f"r{i}" for i in range(6)]
TTL = 6.0
DAYS = 30


def _market(folder: Path) -> Path:
    """The first DAYS days of the shared BTC and ETH 15m/5m candles (a test-sized market)."""
    folder.mkdir()
    for symbol in ("BTC", "ETH"):
        for interval, per_day in (("15m", 96), ("5m", 288)):
            name = f"{symbol}-USDT_{interval}_binance.csv"
            lines = (CANDLES / "binance_spot_2020-12_2021-07" / name).read_text().splitlines()
            (folder / name).write_text("\n".join(lines[:1 + DAYS * per_day]) + "\n")
    return folder


def _bots_file(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"bots": [
        {"id": bot_id, "symbols": ["BTCUSDT", "ETHUSDT"], "risk_pct": 0.5 + 0.25 * i}
        for i, bot_id in enumerate(BOTS)]}))
    return path


async def _ledgers(url: str) -> tuple[dict[str, str], int, int]:
    """Per bot the digest of its closed trades; the trades in all; order link ids stored twice."""
    db = create_engine(url, null_pool=True)
    try:
        ledger = SqlLedger(db, Journal(Path("/nonexistent/j")))
        digests = {bot_id: ledger_digest(await ledger.closed_trades(bot_id)) for bot_id in BOTS}
        async with db.connect() as conn:
            trades = (await conn.execute(text("SELECT count(*) FROM trades WHERE status = 'closed'"))).scalar()
            twice = (await conn.execute(text(
                "SELECT count(*) FROM (SELECT order_link_id FROM orders GROUP BY order_link_id HAVING count(*) > 1) d"
            ))).scalar()
        return digests, int(trades or 0), int(twice or 0)
    finally:
        await db.dispose()


def _database(pg_url: str, tmp_path: Path, name: str, env: dict[str, str]) -> dict[str, str]:
    name = f"{pg_url.rsplit('/', 1)[1]}_{name}"  # beside the test's own database, dropped with the server
    asyncio.run(_admin(pg_url, f"CREATE DATABASE {name}"))
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    env = {**env, "DATABASE_URL": url}
    assert run(["migrate"], tmp_path, env).returncode == 0
    added = run(["bots", "add", str(_bots_file(tmp_path / "bots.yaml"))], tmp_path, env)
    assert added.returncode == 0, added.stderr
    return env


class Replicas:
    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.env = tmp_path, env
        self.procs: dict[str, DeskProcess] = {}
        self.samples = 0

    def start(self, name: str, **env: str) -> None:
        folder = self.tmp_path / name
        folder.mkdir()
        self.procs[name] = DeskProcess(folder, {**self.env, **env}).start()

    def traders(self) -> dict[str, list[str]]:
        """bot -> the live processes trading it, from each one's /health (checked: never two)."""
        out: dict[str, list[str]] = {bot_id: [] for bot_id in BOTS}
        for name, proc in self.procs.items():
            if proc.proc is None or proc.proc.poll() is not None:
                continue
            try:
                body = proc.health()[1]
            except OSError:
                continue
            for bot in body.get("bots", []):
                if bot["running_here"]:
                    out[bot["id"]].append(name)
        self.samples += 1
        assert all(len(names) <= 1 for names in out.values()), f"a bot traded by two processes: {out}"
        return out

    def wait_shares(self, want: dict[str, int], within: float, what: str) -> float:
        started = time.monotonic()
        while True:
            traders = self.traders()
            shares = Counter(names[0] for names in traders.values() if names)
            if dict(shares) == want:
                return time.monotonic() - started
            assert time.monotonic() - started < within, f"{what}: {traders}"
            time.sleep(0.2)


def test_three_replicas_share_six_bots(tmp_path: Path, pg_url: str) -> None:
    market = _market(tmp_path / "market")
    base = desk_env(SECRET_KEY="k" * 40, MARKET_FEED="replay", FEED_DATA=str(market), LEASE_TTL_S=str(int(TTL)))
    single = _database(pg_url, tmp_path, "single", {**base, "FEED_SPEED": "0"})
    shared = _database(pg_url, tmp_path, "shared", {**base, "FEED_SPEED": "400"})

    reference = DeskProcess(tmp_path, single).start()  # one process trades all six
    try:
        reference.wait_healthy(until=lambda b: sum(x["running_here"] for x in b["bots"]) == len(BOTS))
        reference.wait_drained()
    finally:
        assert reference.terminate(timeout=20)[0] == 0
    want, want_trades, _ = asyncio.run(_ledgers(single["DATABASE_URL"]))
    assert want_trades > 0

    replicas = Replicas(tmp_path, shared)
    try:
        for name in ("a", "b", "c"):
            replicas.start(name)
        replicas.wait_shares({"a": 2, "b": 2, "c": 2}, 90, "two bots each")
        replicas.procs["c"].kill()  # SIGKILL: no release, no goodbye
        took = replicas.wait_shares({"a": 3, "b": 3}, TTL + 10, "c's bots taken over")
        assert took <= TTL + 2, f"took {took:.1f} s, the lease ttl is {TTL} s"
        replicas.start("c2", FEED_SPEED="0")  # started again (a new process)
        replicas.wait_shares({"a": 2, "b": 2, "c2": 2}, 60, "rebalanced onto the restarted replica")
        # /health names the process trading each bot, here and on the other replicas; one of them leads
        instances = {name: replicas.procs[name].health()[1]["instance"] for name in ("a", "b", "c2")}
        assert [replicas.procs[name].health()[1]["leading"] for name in sorted(instances, key=instances.get)] == [
            True, False, False]
        deadline = time.monotonic() + TTL
        while True:
            named = {b["id"]: b["traded_by"] for b in replicas.procs["a"].health()[1]["bots"]}
            if named == {bot_id: instances[names[0]] for bot_id, names in replicas.traders().items() if names}:
                break
            assert time.monotonic() < deadline, named
            time.sleep(0.2)
        for name in ("a", "b", "c2"):
            replicas.procs[name].wait_drained()
        assert sorted(n for names in replicas.traders().values() for n in names) == ["a", "a", "b", "b", "c2", "c2"]
        assert replicas.samples > 20
        for name in ("a", "b", "c2"):
            assert replicas.procs[name].terminate(timeout=20)[0] == 0
    finally:
        for proc in replicas.procs.values():
            proc.kill()
    got, trades, twice = asyncio.run(_ledgers(shared["DATABASE_URL"]))
    assert twice == 0
    assert trades == want_trades
    assert got == want
    handed = [line for p in replicas.procs.values() for line in p.output.splitlines() if "handed over" in line]
    assert handed, "no bot was handed over cleanly"
    assert not [p for p in replicas.procs.values() if "Traceback" in p.output]
