"""A real full disk under the running desk (SQLite database and journal on a small tmpfs): trading stops
opening positions and /health says so, the process lives on, no trade it reported is lost, and once
space is back it heals by itself and trades again."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _unavailable
from tests.fakes.clock import wait_until
from tests.hostproc import DeskProcess, desk_env, run

DISK_MB = 64  # the database of this run takes ~15 MB; the ballast takes the rest
BOT = """id: main
symbols: [BTCUSDT, ETHUSDT]
drawdown_guard_pct: null    # the synthetic market would halt the bot before the test is done
daily_loss_limit_pct: null
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "data"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30)
        why = done.stderr.strip() or f"exit code {done.returncode}"
    except OSError as exc:
        done, why = None, str(exc)
    if done is None or done.returncode != 0:
        _unavailable("a tmpfs mount (needs root and mount permission)", why)
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # still busy: detach it anyway


def _fill(path: Path) -> None:
    """Write zeros until the filesystem has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        chunk = 1 << 20
        while chunk >= 1:
            try:
                os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                chunk //= 2
    finally:
        os.close(fd)


def _query(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_disk_full_stops_opening_shows_and_heals(tmp_path: Path, small_disk: Path) -> None:
    db = small_disk / "phantomdesk.db"
    env = desk_env(DATA_DIR=str(small_disk), FEED_SPEED="800")  # the synthetic market: ~90 s of candles
    (tmp_path / "bot.yaml").write_text(BOT)
    assert run(["migrate"], tmp_path, env).returncode == 0
    assert run(["bots", "add", str(tmp_path / "bot.yaml")], tmp_path, env).returncode == 0
    desk = DeskProcess(tmp_path, env).start()
    health: list[tuple[int, dict]] = []

    def status(code: int, fault: bool) -> bool:
        health.append(desk.health())
        code_now, body = health[-1]
        bot = body["bots"][0] if body.get("bots") else {}
        assert desk.proc is not None and desk.proc.poll() is None, desk.output[-3000:]
        assert bot.get("error") is None, bot  # the bot task never dies
        return code_now == code and (bot.get("fault") is not None) == fault

    try:
        desk.wait_healthy()
        await wait_until(lambda: _query(db, "SELECT count(*) FROM trades")[0][0] >= 3, "the first trades", 120, 0.5)

        _fill(small_disk / "ballast")
        try:
            await wait_until(lambda: status(503, fault=True), "/health 503 with the ledger's fault", 120, 0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last /health: {health[-1] if health else None}") from None
        body = health[-1][1]
        assert body["status"] == "error" and body["bots"][0]["fault"].startswith("disk full: journal append failed")
        candles = body["bots"][0]["candles"]
        # it keeps processing candles while full (and blocks every signal it would take meanwhile)
        await wait_until(lambda: status(503, fault=True) and health[-1][1]["bots"][0]["candles"] > candles + 6000,
                         "candles processed while the disk is full", 120, 0.5)

        (small_disk / "ballast").unlink()
        await wait_until(lambda: status(200, fault=False), "/health 200 once space is back", 120, 0.5)
        blocked_sql = ("SELECT min(time), max(time), count(*) FROM signals WHERE action = 'BLOCKED' "
                       "AND reason LIKE 'storage unavailable: disk full%'")
        # the engine's batch of signals is saved once the store takes it again (soon after the ledger)
        await wait_until(lambda: _query(db, blocked_sql)[0][2] > 0, "signals blocked while faulted, saved", 60, 0.5)
        blocked = _query(db, blocked_sql)[0]
        # not one position opened while faulted
        assert _query(db, f"SELECT count(*) FROM signals WHERE action = 'EXECUTED' AND time > '{blocked[0]}' "
                          f"AND time < '{blocked[1]}'") == [(0,)]
        await wait_until(lambda: _query(db, f"SELECT count(*) FROM signals s JOIN trades t ON t.signal_id = s.id "
                                            f"WHERE s.time > '{blocked[1]}'")[0][0] >= 2,
                         "new trades written after the disk was freed", 120, 0.5)
        code, _ = desk.terminate(timeout=20)
    finally:
        desk.kill()
    log = desk.output
    assert code == 0, log[-3000:]
    assert "held in memory" in log and "ledger writes again" in log, log[-3000:]  # the fault really happened
    for death in ("never written", "bot main stopped", "Task exception was never retrieved"):
        assert death not in log, log[max(0, log.index(death) - 3000):][:5000]
    # every trade the desk reported (opened, closed) is in the database, once
    opened, closed = log.count("notice trade_open main:"), log.count("notice trade_close main:")
    assert _query(db, "SELECT count(*), sum(status = 'closed') FROM trades") == [(opened, closed)]
    journals = list((small_disk / "journal").glob("*"))
    assert all(j.suffix == ".jsonl" and j.stat().st_size == 0 for j in journals), journals  # no backlog, no corrupt
