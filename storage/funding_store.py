"""Funding settlements in the database (table funding_rates): what `candles backfill --funding` and the
desk's funding job store, and what paper bots and phantoms on live data settle with."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.funding import FundingSchedule
from core.market.candle import dt_to_ms, ms_to_dt
from storage.db import dialect_insert, session_factory
from storage.models import FundingRate


class FundingStore:
    def __init__(self, db: AsyncEngine) -> None:
        self.sessions = session_factory(db)

    async def upsert(self, symbol: str, rows: Iterable[tuple[int, Decimal]]) -> int:
        """Settlements (ms, rate) of one symbol; a settlement already stored is left as it is."""
        values = [{"symbol": symbol, "time": ms_to_dt(ms), "rate": rate} for ms, rate in rows]
        if not values:
            return 0
        async with self.sessions.begin() as session:
            insert = dialect_insert(session)
            for i in range(0, len(values), 5000):
                await session.execute(insert(FundingRate).values(values[i:i + 5000])
                                      .on_conflict_do_nothing(index_elements=["symbol", "time"]))
        return len(values)

    async def newest(self, symbol: str) -> datetime | None:
        async with self.sessions() as session:
            return await session.scalar(select(FundingRate.time).where(FundingRate.symbol == symbol)
                                        .order_by(FundingRate.time.desc()).limit(1))

    async def rows(self, symbol: str) -> list[tuple[int, Decimal]]:
        async with self.sessions() as session:
            found = (await session.execute(select(FundingRate.time, FundingRate.rate)
                                           .where(FundingRate.symbol == symbol).order_by(FundingRate.time))).all()
        return [(dt_to_ms(t), Decimal(str(r))) for t, r in found]

    async def schedule(self, symbols: Iterable[str]) -> FundingSchedule:
        out = FundingSchedule()
        for symbol in sorted(set(symbols)):
            for ms, rate in await self.rows(symbol):
                out.add(symbol, ms, rate)
        return out
