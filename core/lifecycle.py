"""A trade's lifecycle as an explicit state machine: the Trader moves a trade only along these edges.

    pending ──► open ──► closing ──► closed
       │          └────────────────► closed      (its own TP/SL filled)
       ├──► rejected                              (the exchange refused the entry)
       └──► cancelled                             (nothing filled: IOC remainder, lookup found nothing, /close)
    closing ──► open                              (the close was refused or cancelled unfilled)

A partly filled entry becomes an open trade of the filled quantity once its order is over. Only open,
closing and closed trades reach the ledger; a rejected or cancelled entry frees its symbol and slot at once.
"""

from __future__ import annotations

from enum import StrEnum


class TradeStatus(StrEnum):
    PENDING = "pending"  # entry order sent, not (fully) filled yet
    OPEN = "open"
    CLOSING = "closing"  # a reduce-only close was sent
    CLOSED = "closed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


ALLOWED: dict[TradeStatus, frozenset[TradeStatus]] = {
    TradeStatus.PENDING: frozenset({TradeStatus.OPEN, TradeStatus.REJECTED, TradeStatus.CANCELLED}),
    TradeStatus.OPEN: frozenset({TradeStatus.CLOSING, TradeStatus.CLOSED}),
    TradeStatus.CLOSING: frozenset({TradeStatus.CLOSED, TradeStatus.OPEN}),
    TradeStatus.CLOSED: frozenset(),
    TradeStatus.REJECTED: frozenset(),
    TradeStatus.CANCELLED: frozenset(),
}

# states that hold (or may hold) exchange exposure: they take a slot and their symbol
LIVE_STATES = frozenset({TradeStatus.PENDING, TradeStatus.OPEN, TradeStatus.CLOSING})
# states whose position exists: what a manual close acts on, what reconciliation compares
HELD_STATES = frozenset({TradeStatus.OPEN, TradeStatus.CLOSING})


class IllegalTransition(RuntimeError):
    """A bug or a surprise from the venue: the trade is left as it was and the caller must look."""


def advance(trade_id: str, current: TradeStatus, target: TradeStatus) -> TradeStatus:
    if target not in ALLOWED[current]:
        raise IllegalTransition(f"trade {trade_id}: {current} -> {target} is not a legal transition")
    return target
