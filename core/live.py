"""Live trading glue: the Trader's venue when orders go to a real exchange, and reconciliation rounds.

The Trader is synchronous (it runs inside the engine's candle step). In live mode its orders are
queued here and sent by `run_orders` (lookup-before-retry lives in the broker), fills come back from
the broker's private stream through `pump_events`, and the exchange stays the truth on restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from core.exchange.broker import Broker, Fill, OrderIntent
from core.market.candle import Candle
from core.reconcile import RecoveryDraft, reconcile
from core.trader import Notice, Trader

log = logging.getLogger(__name__)

EXECUTION_LOOKBACK = timedelta(days=7)  # Bybit's executions window


class LiveVenue:
    """What the Trader needs of a venue (submit, set_stop, on_candle, equity, state), backed by a Broker."""

    def __init__(self, broker: Broker, watch_interval: str, equity: Decimal) -> None:
        self.broker = broker
        self.watch_interval = watch_interval
        self._equity = equity
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def submit(self, intent: OrderIntent) -> None:
        self.queue.put_nowait(("open" if not intent.reduce_only else "close", intent))

    def set_stop(self, symbol: str, stop_loss: Decimal) -> None:
        self.queue.put_nowait(("stop", (symbol, stop_loss)))

    def on_candle(self, candle: Candle) -> list[Fill]:
        return []  # the exchange fills; its fills arrive through pump_events

    def equity(self) -> Decimal:
        return self._equity

    def as_json(self) -> dict[str, Any]:
        return {"equity": str(self._equity)}  # the exchange holds the rest

    def restore(self, doc: dict[str, Any]) -> None:
        self._equity = Decimal(doc.get("equity", self._equity))

    async def refresh_equity(self) -> Decimal:
        self._equity = (await self.broker.balance()).equity
        return self._equity


async def run_orders(venue: LiveVenue, notify: Callable[[Notice], Awaitable[None]], bot_id: str) -> None:
    """Send queued orders one by one; a failure is reported, never retried blindly (the broker already
    looked the order up by its link id; reconciliation settles what remains unknown)."""
    while True:
        kind, payload = await venue.queue.get()
        try:
            if kind == "open":
                await venue.broker.open(payload)
            elif kind == "close":
                await venue.broker.close(payload)
            elif kind == "stop":
                setter = getattr(venue.broker, "set_stop", None)
                if setter is None:
                    raise RuntimeError("this broker cannot move a stop")
                await setter(*payload)
        except Exception as exc:
            log.error("live order %s failed: %s", kind, exc)
            await notify(Notice("order_failed", bot_id, f"{kind} order failed: {exc}", {"kind": kind}))
        finally:
            venue.queue.task_done()


async def pump_events(broker: Any, trader: Trader) -> None:
    """Fills from the private stream into the Trader (its ledger events are drained by the host)."""
    async for event in broker.events():
        if isinstance(event, Fill):
            trader.on_fill(event)


async def reconcile_once(trader: Trader, broker: Broker, *, since: datetime, now: datetime,
                         raise_item: Callable[[RecoveryDraft], Awaitable[None]]) -> list[str]:
    """One reconciliation round; returns what was fixed (for the report). Ledger events go to
    trader.events; recovery items to `raise_item`."""
    positions = await broker.positions()
    executions = await broker.executions(max(since, now - EXECUTION_LOOKBACK))
    open_trades = [t.record for t in trader.trades.values() if t.status == "open"]
    rec = reconcile(trader.config.id, set(trader.config.symbols), open_trades, trader.pending_entries(), positions,
                    executions)
    trader.apply_reconciliation(rec)
    for item in rec.items:
        await raise_item(item)
    return rec.notes
