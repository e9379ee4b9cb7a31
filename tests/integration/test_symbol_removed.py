"""A symbol removed from a bot while it holds a trade there: the trade runs to its end, it is not orphaned.

Paper: a bot trading BTC and ETH holds an ETH position when its config is edited to BTC only; restarted,
the host still feeds it ETH candles (the trade's symbol), so the paper venue's stop or target ends the
trade and its slot comes back. Live: reconciliation answers for the symbols of the bot's trades, configured
or not, so the exchange's ETH position is the trade's, not "a trade without a position".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from bot.runtime import Runtime
from bot.settings import load_settings
from core.config import BotConfig
from core.engine import Engine
from core.exchange.broker import Position
from core.exchange.paper import PaperBroker
from core.instruments import Instruments
from core.ledger import TradeRecord
from core.market.candle import Candle, dt_to_ms
from core.market.replay import ReplayFeed
from core.reconcile import reconcile
from core.runner import run
from core.trader import Trader
from storage import migrations
from storage.bots import upsert_bot
from storage.candle_files import read_candle_dir
from storage.db import create_engine, session_factory
from storage.engine_store import SqlEngineStore
from storage.journal import Journal
from storage.ledger import SqlLedger
from storage.models import Trade
from tests.conftest import CANDLES
from tests.fakes.clock import wait_until

DATA = CANDLES / "binance_spot_2020-12_2021-07"
BOTH = BotConfig(id="main", symbols=["BTCUSDT", "ETHUSDT"], max_positions=5)


async def test_a_paper_trade_on_a_removed_symbol_runs_to_its_end(tmp_path: Path, sqlite_url: str) -> None:
    await asyncio.to_thread(migrations.upgrade, sqlite_url)
    db = create_engine(sqlite_url, null_pool=True)
    async with session_factory(db).begin() as session:
        await upsert_bot(session, BOTH)
    # 1. the bot trades BTC and ETH until it holds an ETH position (checkpoint and ledger as the host keeps them)
    instruments = Instruments()
    trader = Trader(BOTH, instruments, PaperBroker(instruments, BOTH.capital, watch_interval=BOTH.fast_interval),
                    mode="paper")
    engine = Engine(BOTH, instruments=instruments, trader=trader)
    start = dt_to_ms(datetime(2021, 2, 1, tzinfo=UTC))
    series = [s.window(start, None) for s in read_candle_dir(DATA, BOTH.symbols, BOTH.intervals)]

    async def until_eth_is_held() -> AsyncIterator[Candle]:
        for candle in ReplayFeed(series).candles():
            yield candle
            if any(t.record.symbol == "ETHUSDT" and t.status == "open" for t in trader.trades.values()):
                return

    settings = load_settings(database_url=sqlite_url, data_dir=tmp_path / "var", market_feed="replay",
                             feed_data=DATA)
    ledger = SqlLedger(db, Journal(tmp_path / "j.jsonl"))
    await run(engine, until_eth_is_held(), SqlEngineStore(db), ledger=ledger)
    async with session_factory(db)() as session:
        [eth] = (await session.scalars(select(Trade).where(Trade.symbol == "ETHUSDT", Trade.status == "open"))).all()

    # 2. the config loses ETH; the restarted host still feeds the bot ETH until that trade is over
    async with session_factory(db).begin() as session:
        await upsert_bot(session, BOTH.model_copy(update={"symbols": ["BTCUSDT"]}))
    runtime = Runtime(settings, db, None, lambda notice: None)
    try:
        await runtime.start()
        assert runtime.bots["main"].held_symbols == {"ETHUSDT"}

        async def eth_closed() -> bool:
            async with session_factory(db)() as session:
                row = await session.get(Trade, eth.id)
                return row is not None and row.status == "closed"

        await wait_until(eth_closed, "the ETH trade to end by its stop or target", 120)
        async with session_factory(db)() as session:
            row = await session.get(Trade, eth.id)
            assert row is not None and row.exit_reason in ("tp", "sl", "trailing")
    finally:
        await runtime.stop()
        await db.dispose()


def test_reconciliation_answers_for_the_symbols_of_its_trades() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    trade = TradeRecord("t-x", "live", "x", "ETHUSDT", "trend_pullback", "long", "open", "live", Decimal(1),
                        Decimal(5), Decimal(3000), now, Decimal(2900), Decimal(3200))
    held = Position("ETHUSDT", "long", Decimal(1), Decimal(3000), Decimal(5))
    other_bots = Position("SOLUSDT", "short", Decimal(10), Decimal(150), Decimal(5))
    rec = reconcile("live", [trade], {}, [held, other_bots], [], scope={"BTCUSDT"})  # ETH no longer configured
    assert not rec.items and not rec.closes  # the position is the trade's; SOL is not this bot's business
