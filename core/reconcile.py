"""Reconciliation: the exchange's positions and executions against the desk's trades.

What is unambiguous is fixed and reported: a position closed on the exchange while the desk was down
is closed in the ledger at the real execution price (reason from the fill: tp / sl, manual for the desk's
own reduce-only close, else reconciled); an entry that filled is opened at its fill. What is not becomes a
recovery item for an admin, and a critical one stops new entries for the bot: a position the desk does
not know, a size that differs, a trade with neither a position nor a closing execution. The desk never
invents a stop-loss or take-profit: an adopted position keeps exactly the levels the exchange reports.

The comparison covers every symbol the bot has a trade in, configured or not (a symbol removed from a
bot's config while a position is open is still that bot's). An item's dedupe key names the state it was
raised for: the same state decided once is not raised again; a new divergence is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from core.decisions import RecoveryDraft, RecoveryKind, options_of
from core.exchange.broker import Fill, Position, exit_side, order_link_id, parse_link
from core.ledger import TradeRecord

STOP_REASON = {"TakeProfit": "tp", "StopLoss": "sl", "TrailingStop": "trailing"}


@dataclass(frozen=True)
class Close:
    trade_id: str
    price: Decimal  # volume-weighted over the closing fills
    fee: Decimal
    fills: list[Fill]
    reason: str


@dataclass
class Reconciliation:
    closes: list[Close] = field(default_factory=list)
    entries: list[Fill] = field(default_factory=list)  # entry fills the desk had not seen
    items: list[RecoveryDraft] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    foreign: set[str] = field(default_factory=set)  # symbols with a position the desk does not manage

    @property
    def critical(self) -> bool:
        return any(i.critical for i in self.items)


def fmt(d: Decimal | None) -> str | None:
    return None if d is None else format(d.normalize(), "f")


def _close_reason(fills: list[Fill]) -> str:
    kinds = set()
    for f in fills:
        parsed = parse_link(f.order_link_id)
        kinds.add(STOP_REASON.get(f.stop_order_type or "") or ("manual" if parsed and parsed[1] == "close" else None))
    return kinds.pop() if len(kinds) == 1 and None not in kinds else "reconciled"  # type: ignore[return-value]


def unknown_position_draft(bot_id: str, p: Position) -> RecoveryDraft:
    return RecoveryDraft(
        RecoveryKind.UNKNOWN_POSITION,
        f"unknown_position:{bot_id}:{p.symbol}:{p.side}:{fmt(p.qty)}:{fmt(p.entry_price)}",
        f"{p.symbol}: the exchange holds a {p.side} position of {fmt(p.qty)} at {fmt(p.entry_price)} the desk "
        f"does not know (stop-loss: {fmt(p.stop_loss) or 'none'}, take-profit: {fmt(p.take_profit) or 'none'})",
        options_of(RecoveryKind.UNKNOWN_POSITION),
        {"symbol": p.symbol, "side": p.side, "qty": fmt(p.qty), "entry_price": fmt(p.entry_price),
         "stop_loss": fmt(p.stop_loss), "take_profit": fmt(p.take_profit)})


def reconcile(bot_id: str, trades: list[TradeRecord], pending: dict[str, str], positions: list[Position],
              executions: list[Fill], *, scope: set[str]) -> Reconciliation:
    """`trades`: the desk's held (open or closing) trades; `pending`: symbol -> link base of an entry sent but
    not seen filled; `executions`: the exchange's fills since the last reconciliation (any order); `scope`:
    the symbols this bot answers for (configured, plus any it holds a trade in; the host leaves out symbols
    another bot on the same account trades)."""
    out = Reconciliation()
    wanted = scope | {t.symbol for t in trades} | set(pending)
    by_symbol = {p.symbol: p for p in positions if p.symbol in wanted and p.qty > 0}
    fills_by_symbol: dict[str, list[Fill]] = defaultdict(list)
    for f in sorted(executions, key=lambda f: (f.time, f.exec_id)):
        fills_by_symbol[f.symbol].append(f)

    for symbol, base in sorted(pending.items()):
        link = order_link_id(base, "open")
        out.entries.extend(f for f in fills_by_symbol.get(symbol, []) if f.order_link_id == link)

    known = {t.symbol for t in trades} | set(pending)
    for t in sorted(trades, key=lambda t: t.id):
        position = by_symbol.get(t.symbol)
        if position is not None and position.side == t.side:
            if position.qty != t.qty:
                out.items.append(RecoveryDraft(
                    RecoveryKind.SIZE_MISMATCH, f"size_mismatch:{bot_id}:{t.id}:{fmt(position.qty)}:{fmt(t.qty)}",
                    f"{t.symbol}: the exchange holds {fmt(position.qty)}, the desk's trade {t.id} {fmt(t.qty)}",
                    options_of(RecoveryKind.SIZE_MISMATCH),
                    {"trade_id": t.id, "symbol": t.symbol, "side": t.side, "exchange_qty": fmt(position.qty),
                     "desk_qty": fmt(t.qty)}))
            continue
        closing = [f for f in fills_by_symbol.get(t.symbol, [])
                   if f.side == exit_side(t.side) and f.time >= t.entry_time]
        qty = sum((f.qty for f in closing), Decimal(0))
        if closing and qty >= t.qty:
            price = sum((f.price * f.qty for f in closing), Decimal(0)) / qty
            reason = _close_reason(closing)
            out.closes.append(Close(t.id, price, sum((f.fee for f in closing), Decimal(0)), closing, reason))
            out.notes.append(f"{t.symbol}: {t.id} was closed on the exchange ({reason}) at {fmt(price)}")
            continue
        held = f" (the exchange holds a {position.side} position instead)" if position is not None else ""
        out.items.append(RecoveryDraft(
            RecoveryKind.TRADE_WITHOUT_POSITION,
            f"no_position:{bot_id}:{t.id}:{fmt(t.qty)}:{position.side if position else '-'}",
            f"{t.symbol}: trade {t.id} is open in the ledger, but the exchange has no {t.side} position and no "
            f"closing execution{held}", options_of(RecoveryKind.TRADE_WITHOUT_POSITION),
            {"trade_id": t.id, "symbol": t.symbol, "side": t.side, "qty": fmt(t.qty)}))

    for symbol, p in sorted(by_symbol.items()):
        if symbol in known:
            continue
        out.items.append(unknown_position_draft(bot_id, p))  # raised once per state (storage dedupes)
        out.foreign.add(symbol)  # pending or ignored: the bot keeps off the symbol either way
    return out
