"""Ledger records handed over together (a replay's batch) land exactly as the same records written one by one:
the same trades and orders, and the same statistics cache (all-time, 7 and 30 days), on both databases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

from core.config import BotConfig
from core.ledger import LedgerEvent, OrderRecord, TradeRecord
from storage import migrations
from storage.bots import upsert_bot
from storage.db import create_engine, session_factory
from storage.journal import Journal
from storage.ledger import Landed, SqlLedger

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PNL = ["12.5", "-4.25", "7", "-10", "3.125", "-0.5", "20", "-6", "1", "-2.75", "9", "-1"]


def _events(bot: str) -> list[LedgerEvent]:
    """Twelve trades over 44 days (so the 7-day, 30-day and all-time figures differ), each opened then closed,
    interleaved; the fourth close arrives twice (a journal replay), and must count once."""
    out: list[LedgerEvent] = []
    for n, pnl in enumerate(PNL):
        entry = T0 + timedelta(days=4 * n)
        opened = TradeRecord(f"{bot}-t{n}", bot, None, "BTCUSDT", "scalp", "long", "open", "paper", Decimal(1),
                             Decimal(1), Decimal(100), entry, Decimal(90), Decimal(120))
        order = OrderRecord(f"{bot}-o{n}", bot, f"{bot}-t{n}", "BTCUSDT", "Buy", "Market", Decimal(1), "Filled",
                            entry, filled_at=entry, filled_qty=Decimal(1), avg_price=Decimal(100),
                            fee=Decimal("0.06"))
        closed = TradeRecord(**{**opened.__dict__, "status": "closed", "exit_time": entry + timedelta(hours=30),
                                "exit_price": Decimal(100) + Decimal(pnl), "exit_reason": "tp",
                                "gross_pnl": Decimal(pnl), "net_pnl": Decimal(pnl)})
        out.append(LedgerEvent("open", opened, [order]))
        out.append(LedgerEvent("close", closed))
        if n == 3:
            out.append(LedgerEvent("close", closed))
    return out


async def _rows(db: Any, bot: str) -> dict[str, list[tuple[Any, ...]]]:
    async with db.connect() as conn:
        cache = (await conn.execute(text(
            "SELECT period, trades, wins, losses, win_rate, CAST(net_pnl AS TEXT), profit_factor, figures "
            "FROM trade_stats_cache WHERE bot_id = :b ORDER BY period"), {"b": bot})).all()
        trades = (await conn.execute(text(
            "SELECT substr(id, 3), status, CAST(net_pnl AS TEXT), exit_time FROM trades WHERE bot_id = :b "
            "ORDER BY id"), {"b": bot})).all()
        orders = (await conn.execute(text("SELECT count(*) FROM orders WHERE bot_id = :b"), {"b": bot})).scalar()
    return {"cache": [tuple(r) for r in cache], "trades": [tuple(r) for r in trades], "orders": [(orders,)]}


async def test_a_batch_lands_as_the_same_records_one_by_one(db_url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(migrations.upgrade, db_url)
    db = create_engine(db_url, null_pool=True)
    try:
        async with session_factory(db).begin() as session:
            for bot in ("a", "b"):
                await upsert_bot(session, BotConfig(id=bot, symbols=["BTCUSDT"]))
        ledger = SqlLedger(db, Journal(tmp_path / "journal.jsonl"))
        for event in _events("a"):
            assert await ledger.record(event) is Landed.DB
        assert await ledger.record(*_events("b")) is Landed.DB
        one_by_one, together = await _rows(db, "a"), await _rows(db, "b")
        assert [r[0] for r in together["cache"]] == ["30d", "7d", "all_time"]
        all_time = dict((r[0], r) for r in together["cache"])["all_time"]
        assert all_time[1] == 12 and all_time[2] == 6  # the repeated close counted once
        assert Decimal(all_time[5]) == sum(Decimal(p) for p in PNL)
        week = dict((r[0], r) for r in together["cache"])["7d"]
        assert 0 < week[1] < 12  # the windows end at the last close: only the latest trades are in them
        for key in ("cache", "trades", "orders"):
            assert together[key] == one_by_one[key], key
    finally:
        await db.dispose()
