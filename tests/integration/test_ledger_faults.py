"""A database whose disk is full, on both databases: SQLite's "database or disk is full" (a real
SQLITE_FULL: the file may not grow) and PostgreSQL's disk_full (SQLSTATE 53100, raised by the server)
are "unavailable, retry later": the ledger falls back to its journal and the engine store keeps its
batch (StoreUnavailable), instead of a statement error that would stop the bot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.config import BotConfig
from core.engine import Checkpoint
from core.ledger import LedgerEvent, TradeRecord
from core.persistence import Batch, StoreUnavailable
from storage import migrations
from storage.bots import upsert_bot
from storage.db import create_engine, is_db_down, session_factory
from storage.engine_store import SqlEngineStore
from storage.journal import Journal
from storage.ledger import SqlLedger

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PG_DISK_FULL = [  # the server's own error, raised where it would come from: writing these tables
    """CREATE FUNCTION pd_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$""",
    *(f"CREATE TRIGGER pd_full_{table} BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION pd_disk_full()"
      for table in ("trades", "bot_states")),
]


def _open(n: int) -> LedgerEvent:
    return LedgerEvent("open", TradeRecord(f"t-{n}", "b", None, "BTCUSDT", "scalp", "long", "open", "paper",
                                           Decimal(1), Decimal(1), Decimal(100), T0 + timedelta(minutes=n),
                                           None, None))


async def _full_engine(url: str) -> AsyncEngine:
    """An engine on the same database, whose every write that needs space fails as on a full disk."""
    full = create_engine(url, null_pool=True)
    if full.dialect.name == "sqlite":
        @event.listens_for(full.sync_engine, "connect")
        def _no_growth(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA page_count")
            cursor.execute(f"PRAGMA max_page_count = {cursor.fetchone()[0]}")  # the file may not grow
            cursor.close()
    else:
        async with full.begin() as conn:
            for statement in PG_DISK_FULL:
                await conn.execute(text(statement))
    return full


@pytest.fixture
async def dbs(db_url: str) -> Any:
    await asyncio.to_thread(migrations.upgrade, db_url)
    db = create_engine(db_url, null_pool=True)
    async with session_factory(db).begin() as session:
        await upsert_bot(session, BotConfig(id="b", symbols=["BTCUSDT"]))
    full = await _full_engine(db_url)
    yield db, full
    await full.dispose()
    await db.dispose()


async def _space_back(db: AsyncEngine) -> None:
    if db.dialect.name == "postgresql":  # SQLite: `db` never had the limit
        async with db.begin() as conn:
            await conn.execute(text("DROP FUNCTION pd_disk_full() CASCADE"))


async def test_a_full_database_is_unavailable_not_a_bug(dbs: tuple[AsyncEngine, AsyncEngine], tmp_path: Path) -> None:
    db, full = dbs
    journal = Journal(tmp_path / "ledger.jsonl")
    ledger = SqlLedger(full, journal)
    landed = [await ledger.record(_open(n)) for n in range(2000) if not journal.backlog()]
    assert landed[-1] == "journal" and set(landed[:-1]) <= {"db"}  # filled up, then the journal took over
    assert ledger.fault is None  # the journal took it: acknowledged, trading goes on

    with pytest.raises(StoreUnavailable) as kept:  # the engine store keeps its batch for the next save
        await SqlEngineStore(full).save("b", Batch(checkpoint=Checkpoint(extra={"pad": "x" * 200_000}), candles=1))
    assert is_db_down(kept.value.__cause__)

    await _space_back(db)
    report = await SqlLedger(db, journal).flush_journal()
    assert (report.replayed, report.remaining) == (1, 0)
    async with db.connect() as conn:
        stored = (await conn.execute(text("SELECT count(*) FROM trades"))).scalar()
    assert stored == len(landed)  # every acknowledged record is in the database
