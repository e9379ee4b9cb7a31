"""/stats answered over 100,000 closed trades in PostgreSQL.

    python -m bench.telegram

The figure: from the moment the update enters the dispatcher (auth middleware, router, the /stats
handler: desk.stats → SqlDeskStore.summary → render) to the sendMessage request recorded by the
session, median of 30 after the first; the first answer after start (the columns loaded from the
table once) is printed too. The baseline, measured in the same run on the same rows: the naive
pattern — load every trade as an ORM object, compute core.stats.summarize in Python, render.

The trades are one bot's, bulk-loaded with COPY, plus the trade_stats_cache row the ledger would
have written with them (the desk checks its cached columns against that row). PostgreSQL is a
throwaway durable cluster (fsync on), or the server in PD_TEST_PG_URL if set (then in a fresh
database dropped afterwards).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode
from aiogram.types import Chat, Message, MessageEntity, Update, User
from sqlalchemy import select

from bench.pg import migrated_database
from bot.settings import Settings
from bot.telegram import build_dispatcher
from bot.telegram.commands import stats as render_stats
from core.config import BotConfig
from core.desk import Desk
from core.stats import facts_of, summarize
from storage.bots import upsert_bot
from storage.db import create_engine, session_factory
from storage.desk_store import SqlDeskStore
from storage.models import Trade, TradeStatsCache

N_TRADES = 100_000
RUNS = 30
ADMIN = 1
BOT = "bench"
EXTRAS: dict[str, Any] = {}


async def _fill(url: str, n: int) -> None:
    """n closed trades of one bot (COPY), and the all_time stats row the ledger keeps with them."""
    engine = create_engine(url)
    rng = random.Random(7)
    t0 = datetime(2023, 1, 1, tzinfo=UTC)
    rows, wins, net, gp, gl = [], 0, Decimal(0), Decimal(0), Decimal(0)
    for i in range(n):
        entry = t0 + timedelta(minutes=5 * i)
        exit_ = entry + timedelta(minutes=rng.randint(5, 600))
        pnl = Decimal(str(round(rng.gauss(2, 40), 4)))
        wins += pnl > 0
        net += pnl
        gp, gl = (gp + pnl, gl) if pnl > 0 else (gp, gl + pnl)
        rows.append((f"t{i:08d}", BOT, f"s{i:08d}", rng.choice(("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")),
                     rng.choice(("trend_pullback", "mean_reversion", "scalp")), rng.choice(("long", "short")),
                     "closed", "paper", Decimal("0.01"), Decimal(5), Decimal(100), entry, Decimal(99), Decimal(102),
                     Decimal(101), exit_, rng.choice(("tp", "sl")), Decimal("0.5"), pnl + Decimal("0.5"), pnl, 0.1,
                     rng.gauss(0.1, 1.2), entry, exit_))
    try:
        async with session_factory(engine).begin() as session:
            await upsert_bot(session, BotConfig(id=BOT, symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]))
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            await raw.copy_records_to_table("trades", records=rows, columns=[  # type: ignore[union-attr]
                "id", "bot_id", "signal_id", "symbol", "strategy", "side", "status", "mode", "qty", "leverage",
                "entry_price", "entry_time", "stop_loss", "take_profit", "exit_price", "exit_time", "exit_reason",
                "fees", "gross_pnl", "net_pnl", "pnl_pct", "realized_r", "created_at", "updated_at"])
            await conn.commit()
        async with session_factory(engine).begin() as session:
            session.add(TradeStatsCache(bot_id=BOT, period="all_time", trades=n, wins=wins, losses=n - wins,
                                        win_rate=wins / n, net_pnl=net, profit_factor=float(gp / -gl),
                                        figures={"gross_profit": str(gp), "gross_loss": str(gl)},
                                        updated_at=datetime.now(UTC)))
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE trades")
    finally:
        await engine.dispose()


def _update(i: int, text: str) -> Update:
    return Update(update_id=i, message=Message(
        message_id=i, date=datetime.now(UTC), text=text, chat=Chat(id=ADMIN, type="private"),
        from_user=User(id=ADMIN, is_bot=False, first_name="admin"),
        entities=[MessageEntity(type="bot_command", offset=0, length=len(text.split()[0]))]))


async def _measure(url: str) -> dict[str, float]:
    from tests.fakes.telegram import TOKEN, RecordingSession

    engine = create_engine(url)
    store = SqlDeskStore(engine)
    desk = Desk(store, None, clock=lambda: datetime.now(UTC))
    settings = Settings(_env_file=None, database_url=url, telegram_bot_token=TOKEN,  # type: ignore[call-arg]
                        telegram_admin_ids=(ADMIN,), secret_key="k" * 40)
    dp = build_dispatcher(desk, settings)
    session = RecordingSession()
    bot = Bot(TOKEN, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))
    sent_at: list[float] = []
    session.on_request = lambda call: sent_at.append(call.at) if call.name == "sendMessage" else None
    await bot.me()  # the Command filter's getMe, answered once and cached, as in a running process

    async def answer(i: int) -> float:
        sent_at.clear()
        started = time.perf_counter()
        await dp.feed_update(bot, _update(i, "/stats"))
        assert len(sent_at) == 1, [c.name for c in session.calls[-3:]]
        return (sent_at[0] - started) * 1000

    try:
        first = await answer(1)
        text = session.named("sendMessage")[-1].text
        assert f"Trades: <b>{N_TRADES}" in text, text[:300]
        times = [await answer(i) for i in range(2, RUNS + 2)]

        async def naive() -> float:
            started = time.perf_counter()
            async with session_factory(engine)() as s:
                trades = (await s.scalars(select(Trade).where(Trade.bot_id == BOT, Trade.status == "closed")
                                          .order_by(Trade.exit_time, Trade.id))).all()
            facts = [facts_of(t)
                     for t in trades]
            doc = summarize(facts, Decimal(10_000))
            doc.update(bot_id="all", days=None, capital=Decimal(10_000))
            _ = doc["trades"]
            await _render(desk, doc)
            return (time.perf_counter() - started) * 1000

        baseline = [await naive() for _ in range(3)]
        return {"first_ms": first, "median_ms": statistics.median(times), "p95_ms": sorted(times)[int(0.95 * RUNS) - 1],
                "baseline_ms": statistics.median(baseline), "reloads": store.closed.reloads}
    finally:
        await engine.dispose()


async def _render(desk: Desk, doc: dict[str, Any]) -> None:
    """The same rendering the handler does, fed with the naive figures."""
    from bot.telegram.commands import Context
    from bot.telegram.keyboards import Confirmations

    class Fixed:
        async def stats(self, days: int | None, bot_id: str | None) -> dict[str, Any]:
            return doc

    ctx = Context(Fixed(), None, Confirmations())  # type: ignore[arg-type]
    await render_stats(ctx)


def run() -> list[dict[str, Any]]:
    with migrated_database("bench_tg") as url:
        asyncio.run(_fill(url, N_TRADES))
        m = asyncio.run(_measure(url))
    EXTRAS.update(m)
    return [{"name": f"telegram: /stats over {N_TRADES:,} trades (update in -> sendMessage, median)",
             "figure": m["median_ms"], "unit": "ms", "baseline": m["baseline_ms"],
             "ratio": m["baseline_ms"] / m["median_ms"], "goal": "< 100 ms", "met": m["median_ms"] < 100}]


def main() -> int:
    import logging

    from bench.table import print_rows

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("aiogram").setLevel(logging.WARNING)
    rows = run()
    print_rows(rows, title="telegram")
    print(f"first /stats after start (columns loaded once): {EXTRAS['first_ms']:,.0f} ms; p95 of {RUNS}: "
          f"{EXTRAS['p95_ms']:.1f} ms; full loads: {EXTRAS['reloads']}")
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
