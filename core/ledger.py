"""The ledger's records: a trade's open and close, with their orders, and the digest that proves two
ledgers equal. Storage writes each event in one transaction (storage/ledger.py); replaying an event
is an upsert by the trade's deterministic id, so a record written twice is still one trade."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from core.config import BotMode
from core.signal import Side

# open: an entry filled (or a position adopted); adjust: an open trade changed (qty adopted from the exchange);
# funding: a settlement booked on an open trade; close: the trade ended
EventKind = Literal["open", "adjust", "funding", "close"]


def trade_id(signal_id: str) -> str:
    return f"t-{signal_id}"


@dataclass
class TradeRecord:
    id: str
    bot_id: str
    signal_id: str | None
    symbol: str
    strategy: str | None
    side: Side
    status: str  # open / closed (pending, closing, rejected, cancelled live in the Trader, see core/lifecycle.py)
    mode: BotMode  # a replay's trades are the replay bot's
    qty: Decimal
    leverage: Decimal
    entry_price: Decimal
    entry_time: datetime
    stop_loss: Decimal | None
    take_profit: Decimal | None
    exit_price: Decimal | None = None
    exit_time: datetime | None = None
    exit_reason: str | None = None
    fees: Decimal = Decimal(0)
    gross_pnl: Decimal | None = None
    net_pnl: Decimal | None = None
    pnl_pct: float | None = None
    realized_r: float | None = None
    funding: Decimal = Decimal(0)  # received (+) or paid (−) while open; net_pnl = gross_pnl − fees + funding
    exit_estimated: bool = False  # the exit price is an estimate (a mark price), not an execution


@dataclass
class OrderRecord:
    order_link_id: str
    bot_id: str
    trade_id: str | None
    symbol: str
    side: str  # Buy / Sell
    order_type: str  # Market, Limit, TakeProfit, StopLoss
    qty: Decimal
    status: str
    created_at: datetime
    exchange_order_id: str | None = None
    price: Decimal | None = None
    reduce_only: bool = False
    filled_at: datetime | None = None
    filled_qty: Decimal | None = None
    avg_price: Decimal | None = None
    fee: Decimal | None = None


@dataclass
class LedgerEvent:
    kind: EventKind
    trade: TradeRecord
    orders: list[OrderRecord] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "trade": _jsonable(asdict(self.trade)),
                "orders": [_jsonable(asdict(o)) for o in self.orders]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LedgerEvent:
        return cls(doc["kind"], _typed(TradeRecord, doc["trade"]), [_typed(OrderRecord, o) for o in doc["orders"]])


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v.isoformat() if isinstance(v, datetime) else v)
            for k, v in d.items()}


def _typed(cls: type, doc: dict[str, Any]) -> Any:
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in doc:  # a record written before the field existed keeps its default
            continue
        v = doc[f.name]
        kind = str(f.type)
        if v is not None and "Decimal" in kind:
            v = Decimal(v)
        elif v is not None and "datetime" in kind:
            v = datetime.fromisoformat(v)
        out[f.name] = v
    return cls(**out)


class Ledger(Protocol):
    async def record(self, *events: LedgerEvent) -> str:
        """Write events durably, in order (one transaction for them all); returns where the last landed ("db" or
        "journal"), or "held": nothing could take it yet (a full disk), it waits in memory and is written first
        next time."""
        ...


class MemoryLedger:
    """The Ledger of a replay without a database (optimize trials, benchmarks): every trade's latest state,
    and the stop it opened with (its risk at entry: core.stats.net_r)."""

    def __init__(self) -> None:
        self.trades: dict[str, TradeRecord] = {}
        self.opening_stop: dict[str, Decimal | None] = {}

    async def record(self, *events: LedgerEvent) -> str:
        for event in events:
            if event.kind == "open":
                self.opening_stop.setdefault(event.trade.id, event.trade.stop_loss)
            self.trades[event.trade.id] = event.trade
        return "memory"

    def closed(self) -> list[TradeRecord]:
        return [t for t in self.trades.values() if t.status == "closed"]


def canonical_decimal(d: Decimal | None) -> str | None:
    """A price or amount as the database returns it too (Numeric(28, 10)), without trailing zeros: the
    same text whether a digest is taken in memory or from either database."""
    return None if d is None else format(d.quantize(Decimal("1e-10")).normalize(), "f")



def canonical(t: TradeRecord) -> dict[str, Any]:
    dec = canonical_decimal
    return {"id": t.id, "symbol": t.symbol, "side": t.side, "qty": dec(t.qty), "entry": dec(t.entry_price),
            "entry_time": t.entry_time.isoformat(), "exit": dec(t.exit_price),
            "exit_time": t.exit_time.isoformat() if t.exit_time else None, "reason": t.exit_reason,
            "fees": dec(t.fees), "net": dec(t.net_pnl)}


def ledger_digest(trades: Iterable[TradeRecord]) -> str:
    """sha256 over the canonical list of closed trades, ordered by id."""
    rows = sorted((canonical(t) for t in trades if t.status == "closed"), key=lambda r: r["id"])
    return hashlib.sha256(json.dumps(rows, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
