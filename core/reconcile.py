"""Reconciliation: the exchange's positions and executions against the desk's open trades.

What is unambiguous is fixed and reported: a position closed on the exchange while the desk was down
is closed in the ledger at the real execution price (reason from the fill: tp / sl, else reconciled);
an entry that filled is opened at its fill. What is not becomes a recovery item for an admin, and a
critical one stops new entries for the bot: a position the desk does not know, a size that differs,
a trade with neither a position nor a closing execution. The desk never invents a stop-loss or
take-profit: an adopted position keeps exactly the levels the exchange reports.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.exchange.broker import Fill, Position, exit_side, order_link_id
from core.ledger import TradeRecord

STOP_REASON = {"TakeProfit": "tp", "StopLoss": "sl", "TrailingStop": "trailing"}


@dataclass(frozen=True)
class RecoveryDraft:
    kind: str
    dedupe_key: str
    text: str
    options: list[str]
    details: dict[str, Any]
    critical: bool = True


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

    @property
    def critical(self) -> bool:
        return any(i.critical for i in self.items)


def _fmt(d: Decimal | None) -> str | None:
    return None if d is None else format(d.normalize(), "f")


def reconcile(bot_id: str, symbols: set[str], trades: list[TradeRecord], pending_signals: dict[str, str],
              positions: list[Position], executions: list[Fill]) -> Reconciliation:
    """`trades`: the desk's open trades; `pending_signals`: symbol -> signal id of an entry sent but not
    seen filled; `executions`: the exchange's fills since the last reconciliation (any order)."""
    out = Reconciliation()
    by_symbol = {p.symbol: p for p in positions if p.symbol in symbols and p.qty > 0}
    fills_by_symbol: dict[str, list[Fill]] = defaultdict(list)
    for f in sorted(executions, key=lambda f: (f.time, f.exec_id)):
        fills_by_symbol[f.symbol].append(f)

    for symbol, signal in sorted(pending_signals.items()):
        link = order_link_id(signal, "open")
        entry = [f for f in fills_by_symbol.get(symbol, []) if f.order_link_id == link]
        if entry:
            out.entries.extend(entry)

    known = {t.symbol for t in trades} | set(pending_signals)
    for t in sorted(trades, key=lambda t: t.id):
        position = by_symbol.get(t.symbol)
        if position is not None and position.side == t.side:
            if position.qty != t.qty:
                out.items.append(RecoveryDraft(
                    "size_mismatch", f"size_mismatch:{bot_id}:{t.id}",
                    f"{t.symbol}: the exchange holds {_fmt(position.qty)}, the desk's trade {t.id} "
                    f"{_fmt(t.qty)}", ["adopt_exchange_size", "close_at_market", "ignore"],
                    {"trade_id": t.id, "symbol": t.symbol, "exchange_qty": _fmt(position.qty),
                     "desk_qty": _fmt(t.qty)}))
            continue
        closing = [f for f in fills_by_symbol.get(t.symbol, [])
                   if f.side == exit_side(t.side) and f.time >= t.entry_time]  # type: ignore[arg-type]
        qty = sum((f.qty for f in closing), Decimal(0))
        if closing and qty >= t.qty:
            price = sum((f.price * f.qty for f in closing), Decimal(0)) / qty
            kinds = {STOP_REASON.get(f.stop_order_type or "") for f in closing}
            reason = kinds.pop() if len(kinds) == 1 and None not in kinds else "reconciled"
            out.closes.append(Close(t.id, price, sum((f.fee for f in closing), Decimal(0)), closing, reason))
            out.notes.append(f"{t.symbol}: {t.id} was closed on the exchange ({reason}) at {_fmt(price)}")
            continue
        out.items.append(RecoveryDraft(
            "trade_without_position", f"no_position:{bot_id}:{t.id}",
            f"{t.symbol}: trade {t.id} is open in the ledger, but the exchange has no position and no closing "
            "execution", ["mark_closed", "ignore"],
            {"trade_id": t.id, "symbol": t.symbol, "side": t.side, "qty": _fmt(t.qty)}))

    for symbol, p in sorted(by_symbol.items()):
        if symbol in known:
            continue
        out.items.append(RecoveryDraft(
            "unknown_position", f"unknown_position:{bot_id}:{symbol}:{p.side}",
            f"{symbol}: the exchange holds a {p.side} position of {_fmt(p.qty)} at {_fmt(p.entry_price)} the desk "
            f"does not know (stop-loss: {_fmt(p.stop_loss) or 'none'}, take-profit: {_fmt(p.take_profit) or 'none'})",
            ["adopt", "close_at_market", "ignore"],
            {"symbol": symbol, "side": p.side, "qty": _fmt(p.qty), "entry_price": _fmt(p.entry_price),
             "stop_loss": _fmt(p.stop_loss), "take_profit": _fmt(p.take_profit)}))
    return out
