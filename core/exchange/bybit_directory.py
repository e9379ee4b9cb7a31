"""Bybit's listings and 24 h turnovers for the universe rule (core.universe.MarketDirectory), from the public REST
endpoints /v5/market/instruments-info (status, quoteCoin, launchTime) and /v5/market/tickers (turnover24h)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from core.exchange.bybit_public import KlineClient
from core.market.candle import ms_to_dt
from core.universe import Listing, Turnover

log = logging.getLogger(__name__)


class BybitDirectory:
    """Blocking pybit calls run in a worker thread; unreadable rows are skipped (and counted), never guessed."""

    def __init__(self, rest_url: str | None = None, *, client: KlineClient | None = None) -> None:
        self._client = client or KlineClient(rest_url)
        self.skipped = 0

    async def listings(self) -> list[Listing]:
        out = []
        for row in await asyncio.to_thread(self._client.get_instruments):
            try:
                out.append(Listing(str(row["symbol"]), str(row["status"]), str(row["quoteCoin"]),
                                   ms_to_dt(int(row["launchTime"]))))
            except (KeyError, TypeError, ValueError) as exc:
                self._skip("instrument", row, exc)
        return out

    async def turnovers(self, now: datetime) -> list[Turnover]:
        """Bybit's rolling 24 h figure as it is when asked (`now` is the caller's, unused: the exchange's own)."""
        out = []
        for row in await asyncio.to_thread(self._client.get_tickers):
            try:
                value = Decimal(str(row["turnover24h"]))
                if not value.is_finite() or value < 0:
                    raise ValueError(f"turnover24h {value}")
                out.append(Turnover(str(row["symbol"]), value))
            except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
                self._skip("ticker", row, exc)
        return out

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    def _skip(self, what: str, row: Any, exc: Exception) -> None:
        self.skipped += 1
        if self.skipped == 1:
            log.warning("universe: an unreadable %s row skipped (%r): %s", what, exc, str(row)[:160])
