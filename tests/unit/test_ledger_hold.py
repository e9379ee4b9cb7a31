"""SqlLedger when neither the database nor the journal takes a record (a full disk): nothing raises,
nothing is lost, records keep their order, and `fault` says why until everything is written."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from core.config import BotConfig
from core.ledger import LedgerEvent, TradeRecord
from storage import migrations
from storage.bots import upsert_bot
from storage.db import create_engine, session_factory
from storage.journal import Journal, encode
from storage.ledger import Landed, SqlLedger

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Faults:
    """The two boundaries: the database statement and the journal's write to disk."""

    db_down: bool = False
    disk_full: bool = False
    refused: bool = False  # the database refuses the statement (a bug, not an outage)
    written: list[str] = field(default_factory=list)  # "<kind> <trade id>" in the order the database took them


def _event(n: int, kind: str = "open") -> LedgerEvent:
    t = TradeRecord(f"t-{n}", "b", None, "BTCUSDT", "scalp", "long", "open", "paper", Decimal(1), Decimal(1),
                    Decimal(100), T0 + timedelta(minutes=n), None, None)
    if kind == "close":
        t.status, t.exit_price, t.exit_time, t.exit_reason = "closed", Decimal(101), T0 + timedelta(hours=n), "tp"
        t.gross_pnl = t.net_pnl = Decimal(1)
    return LedgerEvent(kind, t)  # type: ignore[arg-type]


@pytest.fixture
async def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[SqlLedger, Faults]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}"
    await asyncio.to_thread(migrations.upgrade, url)
    engine = create_engine(url)
    async with session_factory(engine).begin() as session:
        await upsert_bot(session, BotConfig(id="b", symbols=["BTCUSDT"]))
    faults = Faults()
    ledger = SqlLedger(engine, Journal(tmp_path / "journal" / "ledger.jsonl"))
    write = ledger._write

    async def db_write(events: list[LedgerEvent]) -> None:
        if faults.db_down:
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
        if faults.refused:
            raise IntegrityError("INSERT", {}, sqlite3.IntegrityError("NOT NULL constraint failed"))
        await write(events)
        faults.written.extend(f"{event.kind} {event.trade.id}" for event in events)

    real_write = os.write

    def disk_write(fd: int, data: bytes) -> int:
        if faults.disk_full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(ledger, "_write", db_write)
    monkeypatch.setattr("storage.journal.os.write", disk_write)
    yield ledger, faults
    await engine.dispose()


async def _rows(ledger: SqlLedger) -> dict[str, str]:
    async with ledger.engine.connect() as conn:
        return dict((await conn.execute(text("SELECT id, status FROM trades"))).all())


def _journaled(ledger: SqlLedger) -> list[str]:
    return [f"{doc['kind']} {doc['trade']['id']}" for _, doc in ledger.journal.read()[0]]


async def test_held_in_order_then_written_journal_first(ledger: tuple[SqlLedger, Faults]) -> None:
    sql, faults = ledger
    faults.db_down = True
    assert await sql.record(_event(1)) is Landed.JOURNAL  # the database is down: the journal takes it
    faults.disk_full = True
    assert await sql.record(_event(2)) is Landed.HELD  # neither takes it: no exception, nothing lost
    assert await sql.record(_event(1, "close")) is Landed.HELD
    assert sql.fault == "disk full: journal append failed (No space left on device)"
    assert [f"{e.kind} {e.trade.id}" for e in sql.held] == ["open t-2", "close t-1"]
    assert _journaled(sql) == ["open t-1"] and await _rows(sql) == {}

    faults.db_down = faults.disk_full = False  # space is back
    assert await sql.record(_event(3)) == "db"
    # older first: the journal's backlog, then the held records, then the new one
    assert faults.written == ["open t-1", "open t-2", "close t-1", "open t-3"]
    assert sql.fault is None and not sql.held and _journaled(sql) == []
    assert await _rows(sql) == {"t-1": "closed", "t-2": "open", "t-3": "open"}


async def test_held_records_go_to_the_journal_when_only_the_disk_comes_back(ledger: tuple[SqlLedger, Faults]) -> None:
    sql, faults = ledger
    faults.db_down = faults.disk_full = True
    assert await sql.record(_event(1)) == "held"
    faults.disk_full = False
    assert await sql.record(_event(2)) == "journal"
    assert _journaled(sql) == ["open t-1", "open t-2"] and sql.fault is None


async def test_the_flush_job_writes_held_records_without_a_new_trade(ledger: tuple[SqlLedger, Faults]) -> None:
    sql, faults = ledger
    faults.db_down = faults.disk_full = True
    await sql.record(_event(1))
    await sql.record(_event(2))
    report = await sql.flush_journal()  # still full: they stay held, and are counted as waiting
    assert (report.held, report.remaining) == (2, 2) and sql.fault is not None
    faults.db_down = faults.disk_full = False
    report = await sql.flush_journal()
    assert (report.held, report.remaining) == (0, 0) and sql.fault is None
    assert faults.written == ["open t-1", "open t-2"]
    assert await _rows(sql) == {"t-1": "open", "t-2": "open"}


async def test_a_full_local_disk_does_not_matter_while_the_database_answers(ledger: tuple[SqlLedger, Faults]) -> None:
    sql, faults = ledger
    faults.disk_full = True  # PostgreSQL on its own disk: the journal is not needed
    assert await sql.record(_event(1)) == "db"
    assert sql.fault is None and await _rows(sql) == {"t-1": "open"}


async def test_a_statement_the_database_refuses_still_raises(ledger: tuple[SqlLedger, Faults]) -> None:
    sql, faults = ledger
    faults.refused = True
    with pytest.raises(IntegrityError):
        await sql.record(_event(1))
    assert not sql.held and sql.fault is None  # not held: the caller got the exception, as before


async def test_a_record_glued_to_a_torn_tail_is_replayed_into_the_database(ledger: tuple[SqlLedger, Faults]) -> None:
    """An older version's torn append, with the next (acknowledged) record glued to it."""
    sql, _ = ledger
    sql.journal.path.parent.mkdir(parents=True, exist_ok=True)
    torn = encode(_event(1).as_json())[:40]
    sql.journal.path.write_text(torn + encode(_event(2).as_json()))
    report = await sql.flush_journal()
    assert (report.replayed, report.corrupt, report.remaining) == (1, 1, 0)
    assert await _rows(sql) == {"t-2": "open"}
    assert [json.loads(x)["text"] for x in sql.journal.corrupt_path.read_text().splitlines()] == [torn]
