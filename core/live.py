"""Live trading glue: the Trader's venue when orders go to a real exchange, and reconciliation rounds.

The Trader is synchronous (it runs inside the engine's candle step). In live mode its orders are
queued here and sent by `run_orders` (lookup-before-retry lives in the broker); what the exchange said
(the order's state, a refusal, no answer at all) is reported back so the Trader's state machine moves
at once: a refused entry frees its slot, a partly filled one opens at its fill. Fills and funding come
from the broker's private stream, and the exchange stays the truth on restart (`reconcile_once`).

A limit entry rests at the exchange for the bot's `entry_timeout_s`, counted from the order's creation time at the
exchange (so a restart in the middle keeps the same deadline); then it is cancelled by its link id and the
trader's fallback follows from the order's final state (core/trader.py). Reconciliation finds a resting entry
after a restart and watches it again; nothing is ever re-sent under a new id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from core.exchange.broker import (
    TERMINAL_STATUSES,
    Broker,
    Fill,
    FundingFee,
    OrderIntent,
    OrderRejected,
    OrderState,
    OrderUnknown,
    Side,
    order_link_id,
)
from core.lifecycle import TradeStatus
from core.market.candle import Candle
from core.reconcile import RecoveryDraft, reconcile
from core.trader import EntryEnded, Trader

log = logging.getLogger(__name__)

EXECUTION_LOOKBACK = timedelta(days=7)  # Bybit's executions window
MISSING_AFTER = timedelta(minutes=1)  # an entry the exchange still has no trace of after this never got there


class OrderKind(StrEnum):
    OPEN = "open"
    CLOSE = "close"
    CHECK = "check"  # look an entry up (a /close while it was in flight, or a send whose outcome is unknown)
    CANCEL = "cancel"  # withdraw a resting limit entry (its timeout, or a /close), then its final state
    STOP = "stop"


@dataclass(frozen=True)
class OrderOutcome:
    """What the venue said about one queued order: its state, an outright refusal, or nothing certain."""

    kind: OrderKind
    link: str
    state: OrderState | None = None
    refused: str | None = None  # "<code>: <message>" — nothing was placed
    unknown: str | None = None  # the send's outcome could not be confirmed either way
    error: str | None = None  # anything else (a stop that could not be moved, the venue unreachable)


@dataclass
class StopMove:
    symbol: str
    stop_loss: Decimal
    side: Side  # whose stop (a hedge-mode account holds each side apart)


class LiveVenue:
    """What the Trader needs of a venue (submit, cancel_entry, set_stop, on_candle, equity, state), backed
    by a Broker."""

    def __init__(self, broker: Broker, watch_interval: str, equity: Decimal, *,
                 clock: Callable[[], datetime], entry_timeout_s: float = 60.0) -> None:
        """`clock`: "now" for the timeouts of limit entries (the host passes the wall clock)."""
        self.broker = broker
        self.watch_interval = watch_interval
        self._equity = equity
        self.queue: asyncio.Queue[tuple[OrderKind, OrderIntent | StopMove]] = asyncio.Queue()
        self._clock = clock
        self.entry_timeout = timedelta(seconds=entry_timeout_s)
        self._timers: dict[str, asyncio.TimerHandle] = {}  # resting limit entry link -> its timeout

    def submit(self, intent: OrderIntent) -> None:
        self.queue.put_nowait((OrderKind.CLOSE if intent.reduce_only else OrderKind.OPEN, intent))

    def cancel_entry(self, intent: OrderIntent) -> bool:
        # a limit entry is withdrawn; a market entry cannot be: ask what became of it
        self.queue.put_nowait((OrderKind.CANCEL if intent.order_type == "Limit" else OrderKind.CHECK, intent))
        return False

    def set_stop(self, symbol: str, stop_loss: Decimal, side: Side) -> None:
        self.queue.put_nowait((OrderKind.STOP, StopMove(symbol, stop_loss, side)))

    def watch_entry(self, intent: OrderIntent, state: OrderState) -> bool:
        """A limit entry resting at the exchange is cancelled once `entry_timeout` has passed since its creation
        there (at once if that is already over). Once per order; True when a timeout was set now."""
        link = intent.order_link_id
        if intent.order_type != "Limit" or state.status in TERMINAL_STATUSES or link in self._timers:
            return False
        now = self._clock()
        delay = ((state.created_at or now) + self.entry_timeout - now).total_seconds()
        self._timers[link] = asyncio.get_running_loop().call_later(max(0.0, delay), self._expire, intent)
        return True

    def _expire(self, intent: OrderIntent) -> None:
        # forgotten once due: if the cancel fails, the next reconciliation finds the order resting and re-arms it
        self._timers.pop(intent.order_link_id, None)
        self.queue.put_nowait((OrderKind.CANCEL, intent))

    def stop_watching(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def on_candle(self, candle: Candle) -> list[Fill | FundingFee | OrderState]:
        return []  # the exchange fills; its fills arrive through the private stream

    def equity(self) -> Decimal:
        return self._equity

    def as_json(self) -> dict[str, Any]:
        return {"equity": str(self._equity)}  # the exchange holds the rest

    def restore(self, doc: dict[str, Any]) -> None:
        self._equity = Decimal(doc.get("equity", self._equity))

    async def refresh_equity(self) -> Decimal:
        self._equity = (await self.broker.balance()).equity
        return self._equity


async def send(broker: Broker, kind: OrderKind, payload: OrderIntent | StopMove) -> OrderOutcome:
    """One queued order to the venue; never raises (the outcome says what happened)."""
    if isinstance(payload, StopMove):
        try:
            await broker.set_stop(payload.symbol, payload.stop_loss, payload.side)
            return OrderOutcome(kind, "")
        except Exception as exc:
            return OrderOutcome(kind, "", error=f"{payload.symbol}: the stop could not be moved: {exc}")
    link = payload.order_link_id
    try:
        if kind == OrderKind.OPEN:
            return OrderOutcome(kind, link, state=await broker.open(payload))
        if kind == OrderKind.CLOSE:
            return OrderOutcome(kind, link, state=await broker.close(payload))
        state = await (broker.cancel(payload) if kind == OrderKind.CANCEL else broker.order(link))
        return OrderOutcome(kind, link, state=state, unknown=None if state else "the exchange has no such order")
    except OrderRejected as exc:
        code = f"{exc.code}: " if exc.code is not None else ""
        return OrderOutcome(kind, link, refused=f"{code}{exc}")
    except OrderUnknown as exc:
        return OrderOutcome(kind, link, unknown=str(exc))
    except Exception as exc:
        return OrderOutcome(kind, link, error=f"{type(exc).__name__}: {exc}")


async def run_orders(venue: LiveVenue, report: Callable[[OrderOutcome], Awaitable[None]]) -> None:
    """Send queued orders one by one and report every outcome; nothing is retried blindly (the broker
    already looked the order up by its link id; `report` schedules a lookup for what stays unknown)."""
    while True:
        kind, payload = await venue.queue.get()
        try:
            outcome = await send(venue.broker, kind, payload)
            if kind == OrderKind.OPEN and isinstance(payload, OrderIntent) and outcome.state is not None:
                venue.watch_entry(payload, outcome.state)  # a limit entry now resting: its timeout starts
            if outcome.refused or outcome.error:
                log.error("live %s %s failed: %s", kind, outcome.link, outcome.refused or outcome.error)
            await report(outcome)
        except Exception:  # a reporting bug costs one report, never the sender
            log.exception("live %s: reporting the outcome failed", kind)
        finally:
            venue.queue.task_done()


def apply_outcome(trader: Trader, outcome: OrderOutcome) -> EntryEnded | None:
    """Move the Trader's state machine by what the venue said about one order."""
    if outcome.refused is not None:
        return trader.on_refused(outcome.link, f"refused by the exchange: {outcome.refused}")
    if outcome.state is not None:
        return trader.on_order(outcome.state)
    if outcome.kind == OrderKind.CHECK and outcome.unknown is not None:
        trade = next((t for t in trader.pending() if trader.entry_intent(t).order_link_id == outcome.link), None)
        if trade is not None and not trade.fills:
            return trader.on_order(OrderState(outcome.link, None, trade.record.symbol, "Buy", trade.record.qty,
                                              "Cancelled"))  # never reached the venue: nothing to wait for
    return None


@dataclass
class RoundReport:
    notes: list[str] = field(default_factory=list)
    ended: list[EntryEnded] = field(default_factory=list)
    funding: int = 0
    resting: list[tuple[OrderIntent, OrderState]] = field(default_factory=list)  # limit entries still in the book


async def reconcile_once(trader: Trader, broker: Broker, *, since: datetime, now: datetime, scope: set[str],
                         raise_item: Callable[[RecoveryDraft], Awaitable[None]]) -> RoundReport:
    """One reconciliation round. Pending entries are settled first (their fills, their order's state: a
    partly filled entry opens at its fill, one the exchange never saw ends), funding is booked on the held
    trades, then positions are compared. Ledger events go to trader.events; recovery items to `raise_item`."""
    since = max(since, now - EXECUTION_LOOKBACK)
    positions = await broker.positions()
    executions = await broker.executions(since)
    report = RoundReport()
    for t in trader.pending():
        links = {order_link_id(t.base, "open"), order_link_id(t.base, "fallback")}  # a limit entry and its fallback
        for fill in (f for f in executions if f.order_link_id in links):
            trader.on_fill(fill)
        if t.status != TradeStatus.PENDING:
            continue
        intent = trader.entry_intent(t)
        link = intent.order_link_id
        state = await broker.order(link)
        if state is not None and state.status not in TERMINAL_STATUSES:
            report.resting.append((intent, state))
        missing = state is None and not t.fills and now - t.record.entry_time >= MISSING_AFTER
        if state is not None:
            ended = trader.on_order(state)
        elif missing:
            ended = apply_outcome(trader, OrderOutcome(OrderKind.CHECK, link, unknown="the exchange has no such order"))
        else:
            ended = None
        if ended is not None:
            report.ended.append(ended)
    for fee in await broker.funding(since):
        before = len(trader.events)
        trader.on_funding(fee)
        report.funding += len(trader.events) - before
    held = [t.record for t in trader.held()]
    pending = {t.record.symbol: t.base for t in trader.pending()}
    rec = reconcile(trader.config.id, held, pending, positions, executions, scope=scope)
    trader.apply_reconciliation(rec)
    trader.foreign = rec.foreign
    for item in rec.items:
        await raise_item(item)
    report.notes = rec.notes
    return report
