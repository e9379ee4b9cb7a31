"""Trader: one bot's positions. Sizes and guards signals (RiskGate), turns taken signals into orders,
applies fills, manages open positions (trailing stop, move to breakeven at 1R) and emits ledger events.

It is driven by the engine (on_candle before strategies, guard during, on_decisions after) and by
fills (from the paper venue on each candle, or the exchange's private stream in live mode). Exit
reasons: tp, sl, trailing (a stop the desk moved), manual, reconciled, liquidation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Protocol

from core.config import BotConfig
from core.exchange.broker import Fill, OrderIntent, entry_side, exit_side, order_link_id
from core.instruments import Instruments
from core.ledger import LedgerEvent, OrderRecord, TradeRecord, trade_id
from core.market.candle import Candle
from core.ml.scorer import Score
from core.reconcile import Reconciliation
from core.risk import OpenExposure, RiskGate, RiskState, Sizing
from core.signal import Signal

STOP_KIND_REASON = {"TakeProfit": "tp", "StopLoss": "sl"}


class Venue(Protocol):
    """Where the Trader's orders go: the paper venue, or live.LiveVenue in front of an exchange."""

    watch_interval: str

    def submit(self, intent: OrderIntent) -> Any: ...

    def set_stop(self, symbol: str, stop_loss: Decimal) -> None: ...

    def on_candle(self, candle: Candle) -> list[Fill]: ...

    def equity(self) -> Decimal: ...

    def as_json(self) -> dict[str, Any]: ...

    def restore(self, doc: dict[str, Any]) -> None: ...


@dataclass
class OpenTrade:
    record: TradeRecord
    initial_stop: Decimal
    status: str = "pending"  # pending (order sent) -> open (filled)
    stop_moved: bool = False
    fills: list[Fill] = field(default_factory=list)  # parts of the entry (or exit) filled so far
    seen: set[str] = field(default_factory=set)  # exec ids applied

    @property
    def direction(self) -> int:
        return 1 if self.record.side == "long" else -1


@dataclass
class Notice:
    """Something the operator must hear about (halts, breaker trips); storage turns some into recovery items."""

    kind: str
    bot_id: str
    text: str
    details: dict[str, Any] = field(default_factory=dict)


class Trader:
    def __init__(self, config: BotConfig, instruments: Instruments, broker: Venue, mode: str = "replay") -> None:
        self.config = config
        self.instruments = instruments
        self.broker = broker
        self.mode = mode
        self.risk = RiskGate(config, instruments)
        self.state = RiskState(config.capital, config.capital)
        self.trades: dict[str, OpenTrade] = {}  # trade id -> pending or open
        self.events: list[LedgerEvent] = []  # drained by the runner, written one transaction each
        self.notices: list[Notice] = []
        self._sizing: dict[str, Sizing] = {}
        self._win_rate: Any = None  # set by the engine: strategy -> (rate, outcomes)

    # --- engine hooks ------------------------------------------------------------------------------
    def guard(self, signal: Signal, score: Score) -> str | None:
        exposure = [OpenExposure(t.record.symbol, t.record.qty * t.record.entry_price) for t in self.trades.values()]
        was_halted = self.state.halted
        rate = self._win_rate(signal.strategy) if self._win_rate else (float("nan"), 0)
        reason = self.risk.check(signal, self.state, exposure, rate)
        if self.state.halted and not was_halted:
            self.notices.append(Notice("drawdown_halt", self.config.id, f"{self.config.id}: {self.state.halt_reason}",
                                       {"equity": str(self.state.equity), "peak": str(self.state.peak_equity)}))
        if reason is not None:
            if reason.startswith("win-rate breaker"):
                self.notices.append(Notice("breaker", self.config.id, reason, {"strategy": signal.strategy}))
            return reason
        sizing = self.risk.size(signal, self.state.equity, sum((e.notional for e in exposure), Decimal(0)))
        if isinstance(sizing, str):
            return sizing
        self._sizing[signal.id] = sizing
        return None

    def on_decisions(self, decisions: list[Any]) -> None:
        for d in decisions:
            sizing = self._sizing.pop(d.signal.id, None)
            if d.action != "EXECUTED" or sizing is None:
                continue
            s: Signal = d.signal
            tid = trade_id(s.id)
            record = TradeRecord(tid, s.bot_id, s.id, s.symbol, s.strategy, s.side, "open", self.mode, sizing.qty,
                                 sizing.leverage, s.entry, s.time, s.stop_loss, s.take_profit)
            self.trades[tid] = OpenTrade(record, s.stop_loss)
            self.broker.submit(OrderIntent(s.bot_id, s.id, s.symbol, s.side, sizing.qty, sizing.leverage,
                                           order_link_id(s.id, "open"), s.stop_loss, s.take_profit))

    def on_candle(self, candle: Candle) -> None:
        for fill in self.broker.on_candle(candle):
            self.on_fill(fill)
        if candle.interval == self.broker.watch_interval:
            self._manage_stops(candle)

    def close_at_market(self, symbol: str | None = None) -> list[str]:
        """Manual exits: a reduce-only market close per open position (exit reason "manual")."""
        closing = []
        for t in self.trades.values():
            r = t.record
            if t.status != "open" or (symbol is not None and r.symbol != symbol) or r.signal_id is None:
                continue
            self.broker.submit(OrderIntent(r.bot_id, r.signal_id, r.symbol, r.side, r.qty, r.leverage,  # type: ignore[arg-type]
                                           order_link_id(r.signal_id, "close"), reduce_only=True))
            closing.append(r.id)
        return closing

    # --- fills ---------------------------------------------------------------------------------------
    def _trade_of(self, fill: Fill) -> OpenTrade | None:
        """By the order's link id; else (a position's own TP/SL order has none) the open trade on that
        symbol whose exit side the fill is."""
        link = fill.order_link_id or ""
        signal_id = link[3:].rsplit("-", 1)[0] if link.startswith("pd-") else ""
        trade = self.trades.get(trade_id(signal_id)) if signal_id else None
        if trade is not None:
            return trade
        return next((t for t in self.trades.values() if t.status == "open" and t.record.symbol == fill.symbol
                     and exit_side(t.record.side) == fill.side), None)  # type: ignore[arg-type]

    def on_fill(self, fill: Fill) -> None:
        """Entry and exit fills, possibly in several parts: a trade opens (closes) once its quantity is filled,
        at the volume-weighted price. A fill seen twice (stream and reconciliation) counts once."""
        trade = self._trade_of(fill)
        if trade is None or fill.exec_id in trade.seen:
            return  # not ours (reconciliation looks at those), or already applied
        trade.seen.add(fill.exec_id)
        r = trade.record
        exiting = trade.status == "open" and fill.side == exit_side(r.side)  # type: ignore[arg-type]
        if trade.status == "pending" and fill.side == entry_side(r.side):  # type: ignore[arg-type]
            trade.fills.append(fill)
            if sum(f.qty for f in trade.fills) < r.qty:
                return
            fills, trade.fills = trade.fills, []
            trade.status = "open"
            r.entry_price, r.entry_time, r.fees = _vwap(fills), fills[-1].time, sum(f.fee for f in fills)
            self.events.append(LedgerEvent("open", _copy(r), [_order(r, fills, fills[-1].order_link_id)]))
        elif exiting:
            trade.fills.append(fill)
            if sum(f.qty for f in trade.fills) < r.qty:
                return
            fills, trade.fills = trade.fills, []
            kinds = {STOP_KIND_REASON.get(f.stop_order_type or "", "manual") for f in fills}
            reason = kinds.pop() if len(kinds) == 1 else "manual"
            if reason == "sl" and trade.stop_moved:
                reason = "trailing"
            link = fills[-1].order_link_id or (order_link_id(r.signal_id, reason if reason in ("tp", "sl") else "close")
                                               if r.signal_id else fills[-1].exec_id)
            self._close(trade, _vwap(fills), fills[-1].time, sum((f.fee for f in fills), Decimal(0)), reason,
                        _order(r, fills, link))

    def _close(self, trade: OpenTrade, price: Decimal, at: datetime, fee: Decimal, reason: str,
               order: OrderRecord | None) -> None:
        r = trade.record
        direction = trade.direction
        r.status, r.exit_price, r.exit_time, r.exit_reason = "closed", price, at, reason
        r.fees += fee
        r.gross_pnl = (price - r.entry_price) * r.qty * direction
        r.net_pnl = r.gross_pnl - r.fees
        r.pnl_pct = float((price - r.entry_price) / r.entry_price * direction * 100)
        risk_per_unit = abs(r.entry_price - trade.initial_stop)
        r.realized_r = float((price - r.entry_price) * direction / risk_per_unit) if risk_per_unit else None
        del self.trades[r.id]
        self.state.realize(r.net_pnl, at)
        if r.net_pnl <= 0:
            self.risk.on_loss(self.state, r.symbol, int(at.timestamp() * 1000))
        self.events.append(LedgerEvent("close", _copy(r), [order] if order else []))

    # --- after a restart (live): the ledger's open trades, then the exchange's word on them ---------------------
    def load_open(self, trades: list[TradeRecord]) -> None:
        for r in trades:
            if r.status == "open" and r.id not in self.trades:
                self.trades[r.id] = OpenTrade(r, r.stop_loss if r.stop_loss is not None else r.entry_price, "open")

    def pending_entries(self) -> dict[str, str]:
        """symbol -> signal id of entries sent but not seen filled."""
        return {t.record.symbol: t.record.signal_id or "" for t in self.trades.values() if t.status == "pending"}

    def apply_reconciliation(self, rec: Reconciliation) -> None:
        for fill in rec.entries:
            self.on_fill(fill)
        for close in rec.closes:
            trade = self.trades.get(close.trade_id)
            if trade is None or trade.status != "open":
                continue
            last = close.fills[-1]
            purpose = {"tp": "tp", "sl": "sl"}.get(close.reason, "close")
            link = order_link_id(trade.record.signal_id, purpose) if trade.record.signal_id else last.exec_id
            order = OrderRecord(link, trade.record.bot_id, trade.record.id, last.symbol, last.side,
                                last.stop_order_type or "Market", sum((f.qty for f in close.fills), Decimal(0)),
                                "Filled", last.time, last.exchange_order_id, None, True, last.time,
                                sum((f.qty for f in close.fills), Decimal(0)), close.price, close.fee)
            self._close(trade, close.price, last.time, close.fee, close.reason, order)
        if rec.critical:
            self.state.critical_pending = True

    # --- position management ----------------------------------------------------------------------------
    def _manage_stops(self, candle: Candle) -> None:
        """Trailing stop and move-to-breakeven, from this candle's extremes: effective from the next candle."""
        c = self.config
        if c.trailing_stop_pct is None and c.breakeven_at_r is None:
            return
        for trade in self.trades.values():
            r = trade.record
            if trade.status != "open" or r.symbol != candle.symbol or r.stop_loss is None:
                continue
            d = trade.direction
            inst = self.instruments.get(r.symbol, candle.close)
            risk = abs(r.entry_price - trade.initial_stop)
            best = Decimal(repr(candle.high if d == 1 else candle.low))
            stop = r.stop_loss
            if c.breakeven_at_r is not None and (best - r.entry_price) * d >= c.breakeven_at_r * risk:
                stop = max(stop, r.entry_price) if d == 1 else min(stop, r.entry_price)
            if c.trailing_stop_pct is not None and (best - r.entry_price) * d >= risk:  # trail once 1R is banked
                trail = best * (1 - d * c.trailing_stop_pct / 100)
                trail = inst.price(trail, ROUND_FLOOR if d == 1 else ROUND_CEILING)
                stop = max(stop, trail) if d == 1 else min(stop, trail)
            if stop != r.stop_loss:
                r.stop_loss = stop
                trade.stop_moved = True
                self.broker.set_stop(r.symbol, stop)

    # --- state --------------------------------------------------------------------------------------------
    def equity(self) -> Decimal:
        return self.broker.equity()

    def as_json(self) -> dict[str, Any]:
        return {"risk": self.state.as_json(), "broker": self.broker.as_json(),
                "trades": [{"record": LedgerEvent("open", t.record).as_json()["trade"],
                            "initial_stop": str(t.initial_stop), "status": t.status, "stop_moved": t.stop_moved}
                           for t in self.trades.values()]}

    def restore(self, doc: dict[str, Any]) -> None:
        self.state = RiskState.from_json(doc["risk"])
        self.broker.restore(doc["broker"])
        self.trades = {}
        for t in doc["trades"]:
            record = LedgerEvent.from_json({"kind": "open", "trade": t["record"], "orders": []}).trade
            self.trades[record.id] = OpenTrade(record, Decimal(t["initial_stop"]), t["status"], t["stop_moved"])


def _copy(r: TradeRecord) -> TradeRecord:
    return TradeRecord(**r.__dict__)


def _vwap(fills: list[Fill]) -> Decimal:
    qty = sum((f.qty for f in fills), Decimal(0))
    return sum((f.price * f.qty for f in fills), Decimal(0)) / qty


def _order(r: TradeRecord, fills: list[Fill], link: str | None) -> OrderRecord:
    last = fills[-1]
    qty = sum((f.qty for f in fills), Decimal(0))
    return OrderRecord(link or last.exec_id, r.bot_id, r.id, last.symbol, last.side, last.stop_order_type or "Market",
                       qty, "Filled", fills[0].time, last.exchange_order_id, None, last.reduce_only, last.time, qty,
                       _vwap(fills), sum((f.fee for f in fills), Decimal(0)))
