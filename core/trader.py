"""Trader: one bot's positions. Sizes and guards signals (RiskGate), turns taken signals into orders,
applies fills, order results and funding, manages open positions (trailing stop, move to breakeven) and
emits ledger events.

It is driven by the engine (on_candle before strategies, guard during, on_decisions after) and by the
venue's reports (paper fills on each candle; live: the private stream, order results, reconciliation).
Every trade moves along core/lifecycle.py's state machine. Exit reasons: tp, sl, trailing (a stop the
desk moved), manual, reconciled, reconciled_manual, liquidation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Any, Literal, Protocol

from core.config import BotConfig, BotMode
from core.exchange.broker import (
    ENTRY_PURPOSES,
    TERMINAL_STATUSES,
    Fill,
    FundingFee,
    OrderIntent,
    OrderState,
    Position,
    Purpose,
    Side,
    entry_side,
    exit_side,
    order_link_id,
    parse_link,
)
from core.instruments import Instruments
from core.ledger import LedgerEvent, OrderRecord, TradeRecord, trade_id
from core.lifecycle import HELD_STATES, LIVE_STATES, TradeStatus, advance
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

    def cancel_entry(self, intent: OrderIntent) -> bool:
        """Withdraw an entry not filled yet: True when it is certainly withdrawn now (paper); False when
        only the venue can tell (live: its state is looked up and reported back through on_order)."""
        ...

    def set_stop(self, symbol: str, stop_loss: Decimal, side: Side) -> None: ...

    def on_candle(self, candle: Candle) -> list[Fill | FundingFee | OrderState]: ...

    def equity(self) -> Decimal: ...

    def as_json(self) -> dict[str, Any]: ...

    def restore(self, doc: dict[str, Any]) -> None: ...


# every kind of notice, in one place: the notifier's icons and de-duplication are keyed by these
NoticeKind = Literal[
    "trade_open", "trade_close", "entry_rejected", "entry_cancelled", "drawdown_halt", "breaker", "bot_failed",
    "feed_failed", "order_failed", "strategy_failed", "job_failing", "journal_corrupt", "lease_lost", "reconciled",
    "recovery", "recovery_done", "retrain_done", "redis_back", "storage", "backup_offsite_failed", "daily_report",
    "start", "stop", "universe",
]


@dataclass
class OpenTrade:
    record: TradeRecord
    initial_stop: Decimal
    status: TradeStatus = TradeStatus.PENDING
    stop_moved: bool = False
    fills: list[Fill] = field(default_factory=list)  # parts of the entry (or exit) filled so far
    seen: set[str] = field(default_factory=set)  # exec ids applied (fills and funding)
    entry_filled: Decimal | None = None  # the entry order is over with this much filled (IOC remainder cancelled)
    close_link: str | None = None  # the reduce-only close in flight
    close_requested: bool = False  # /close on a pending entry: close as soon as it turns out filled
    fallback: bool = False  # its limit entry ended unfilled: the entry is now the market fallback (…-m)

    @property
    def direction(self) -> int:
        return 1 if self.record.side == "long" else -1

    @property
    def base(self) -> str:
        """What this trade's order link ids are made of (its signal id, or rv<item> for an adopted one)."""
        return self.record.id[2:]

    @property
    def side(self) -> Side:
        return "long" if self.record.side == "long" else "short"


@dataclass
class Notice:
    """Something the operator must hear about (halts, breaker trips); storage turns some into recovery items."""

    kind: NoticeKind
    bot_id: str
    text: str
    details: dict[str, Any] = field(default_factory=dict)


class CloseStep(StrEnum):
    SENT = "close sent"
    ALREADY_CLOSING = "already closing"
    ENTRY_CANCELLED = "entry cancelled"
    CANCEL_REQUESTED = "entry withdrawn if unfilled, else closed once filled"


@dataclass(frozen=True)
class Closing:
    """What a manual close did to one trade."""

    trade_id: str
    symbol: str
    qty: Decimal
    step: CloseStep


@dataclass(frozen=True)
class EntryEnded:
    """A pending entry that ended without a position: its slot and symbol are free again."""

    trade_id: str
    signal_id: str | None
    symbol: str
    status: TradeStatus  # rejected | cancelled
    reason: str


class Trader:
    def __init__(self, config: BotConfig, instruments: Instruments, broker: Venue, mode: BotMode = "replay") -> None:
        self.config = config
        self.instruments = instruments
        self.broker = broker
        self.mode = mode
        self.risk = RiskGate(config, instruments)
        self.state = RiskState(config.capital, config.capital)
        self.trades: dict[str, OpenTrade] = {}  # trade id -> pending, open or closing
        self.events: list[LedgerEvent] = []  # drained by the runner, written one transaction each
        self.notices: list[Notice] = []
        self.ended: list[EntryEnded] = []  # drained by the host: the signals become REJECTED
        self.foreign: set[str] = set()  # symbols where the exchange holds a position an admin chose to ignore
        self._sizing: dict[str, Sizing] = {}
        self._win_rate: Callable[[str], tuple[float, int]] | None = None  # set by the engine

    # --- engine hooks ------------------------------------------------------------------------------
    def guard(self, signal: Signal, score: Score) -> str | None:
        exposure = [OpenExposure(t.record.symbol, t.record.qty * t.record.entry_price) for t in self.trades.values()
                    if t.status in LIVE_STATES]
        was_halted = self.state.halted
        rate = self._win_rate(signal.strategy) if self._win_rate else (float("nan"), 0)
        reason = self.risk.check(signal, self.state, exposure, rate)
        if self.state.halted and not was_halted:
            self.notices.append(Notice("drawdown_halt", self.config.id, f"{self.config.id}: {self.state.halt_reason}",
                                       {"equity": str(self.state.equity), "peak": str(self.state.peak_equity)}))
        if reason is None and signal.symbol in self.foreign:
            reason = f"the exchange holds a {signal.symbol} position the desk does not manage"
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
            self.broker.submit(self.entry_intent(self.trades[tid]))

    def on_candle(self, candle: Candle) -> None:
        for event in self.broker.on_candle(candle):  # the paper venue's fills, funding, refusals
            if isinstance(event, Fill):
                self.on_fill(event)
            elif isinstance(event, FundingFee):
                self.on_funding(event)
            else:
                self.on_order(event)
        if candle.interval == self.broker.watch_interval:
            self._manage_stops(candle)

    # --- manual exits ---------------------------------------------------------------------------------
    def close_at_market(self, symbol: str | None = None, trade_ids: Iterable[str] | None = None) -> list[Closing]:
        """Manual exits (reason "manual") of one symbol's trades, of the listed trades, or of all: a
        reduce-only market close per position; a pending entry is withdrawn (or closed once it fills)."""
        wanted = set(trade_ids) if trade_ids is not None else None
        out = []
        for t in list(self.trades.values()):
            r = t.record
            if (symbol is not None and r.symbol != symbol) or (wanted is not None and r.id not in wanted):
                continue
            if t.status == TradeStatus.OPEN:
                self.broker.submit(self.begin_close(r.id, order_link_id(t.base, "close")))
                out.append(Closing(r.id, r.symbol, r.qty, CloseStep.SENT))
            elif t.status == TradeStatus.CLOSING:
                out.append(Closing(r.id, r.symbol, r.qty, CloseStep.ALREADY_CLOSING))
            elif t.status == TradeStatus.PENDING:
                t.close_requested = True
                if self.broker.cancel_entry(self.entry_intent(t)):
                    self._end_entry(t, TradeStatus.CANCELLED, "withdrawn by the operator before it filled")
                    out.append(Closing(r.id, r.symbol, r.qty, CloseStep.ENTRY_CANCELLED))
                else:
                    out.append(Closing(r.id, r.symbol, r.qty, CloseStep.CANCEL_REQUESTED))
        return out

    def begin_close(self, tid: str, link: str, qty: Decimal | None = None) -> OrderIntent:
        """Mark an open trade closing under `link` and return the reduce-only intent (the caller sends it)."""
        t = self.trades[tid]
        t.status = advance(tid, t.status, TradeStatus.CLOSING)
        t.close_link = link
        r = t.record
        return OrderIntent(r.bot_id, t.base, r.symbol, t.side, qty if qty is not None else r.qty, r.leverage, link,
                           reduce_only=True)

    # --- venue reports ----------------------------------------------------------------------------------
    def _trade_of(self, link: str | None, symbol: str, side: str | None) -> OpenTrade | None:
        """By the order's link id (an entry, the trade's own close, or a recovery close); else (a position's
        own TP/SL order has no link id) the held trade on that symbol whose exit side the order is."""
        parsed = parse_link(link)
        if parsed is not None:
            trade = self.trades.get(trade_id(parsed[0]))
            if trade is not None:
                return trade
            trade = next((t for t in self.trades.values() if t.close_link == link), None)
            if trade is not None or parsed[1] in ENTRY_PURPOSES:
                return trade
        return next((t for t in self.trades.values() if t.status in HELD_STATES and t.record.symbol == symbol
                     and exit_side(t.side) == side), None)

    def on_fill(self, fill: Fill) -> None:
        """Entry and exit fills, possibly in several parts: a trade opens (closes) once its quantity is filled,
        at the volume-weighted price. A fill seen twice (stream and reconciliation) counts once."""
        trade = self._trade_of(fill.order_link_id, fill.symbol, fill.side)
        if trade is None or fill.exec_id in trade.seen:
            return  # not ours (reconciliation looks at those), or already applied
        trade.seen.add(fill.exec_id)
        r = trade.record
        if trade.status == TradeStatus.PENDING and fill.side == entry_side(trade.side):
            trade.fills.append(fill)
            self._maybe_open(trade)
        elif trade.status in HELD_STATES and fill.side == exit_side(trade.side):
            trade.fills.append(fill)
            if sum(f.qty for f in trade.fills) < r.qty:
                return
            fills, trade.fills = trade.fills, []
            kinds = {STOP_KIND_REASON.get(f.stop_order_type or "", "manual") for f in fills}
            reason = kinds.pop() if len(kinds) == 1 else "manual"
            if reason == "sl" and trade.stop_moved:
                reason = "trailing"
            purpose: Purpose = "tp" if reason == "tp" else "sl" if reason == "sl" else "close"
            link = fills[-1].order_link_id or order_link_id(trade.base, purpose)
            self._close(trade, _vwap(fills), fills[-1].time, sum((f.fee for f in fills), Decimal(0)), reason,
                        _order(r, fills, link))

    def on_order(self, state: OrderState) -> EntryEnded | None:
        """An order's state from the venue (stream, the reply to a send, a lookup). An entry that is over
        with part filled opens at the filled quantity; with nothing filled it ends and frees its slot; a
        close that ended unfilled leaves the trade open again."""
        if state.status not in TERMINAL_STATUSES:
            return None
        trade = self._trade_of(state.order_link_id, state.symbol, None)
        parsed = parse_link(state.order_link_id)
        if trade is None or parsed is None:
            return None
        if parsed[1] in ENTRY_PURPOSES and trade.status == TradeStatus.PENDING:
            if state.order_link_id != self.entry_intent(trade).order_link_id:
                return None  # the limit entry its market fallback replaced (it ended with nothing filled)
            if state.filled_qty > 0:
                trade.entry_filled = state.filled_qty
                self._maybe_open(trade)
                return None
            limit = parsed[1] == "open" and self.config.entry_order == "limit"
            if limit and state.status == "Cancelled" and self.config.entry_fallback == "market" \
                    and not trade.close_requested:
                trade.fallback = True  # the venue refuses it if the price ran past the bound
                self.broker.submit(self.entry_intent(trade))
                return None
            ended = TradeStatus.REJECTED if state.status == "Rejected" else TradeStatus.CANCELLED
            why = state.reject_reason or f"the exchange reports the entry {state.status} with nothing filled"
            if limit and state.status == "Cancelled":
                why = ("the limit entry was withdrawn by the operator before it filled" if trade.close_requested else
                       f"the limit entry was cancelled unfilled ({state.reject_reason or 'its timeout passed'}); "
                       "fallback skip")
            return self._end_entry(trade, ended, why)
        if trade.status == TradeStatus.CLOSING and state.order_link_id == trade.close_link \
                and state.filled_qty < trade.record.qty and not trade.fills:
            trade.status, trade.close_link = advance(trade.record.id, trade.status, TradeStatus.OPEN), None
        return None

    def on_refused(self, link: str, reason: str) -> EntryEnded | None:
        """The venue refused an order outright (nothing was placed)."""
        trade = self._trade_of(link, "", None)
        parsed = parse_link(link)
        if trade is None or parsed is None:
            return None
        if parsed[1] in ENTRY_PURPOSES and trade.status == TradeStatus.PENDING:
            if link != self.entry_intent(trade).order_link_id:
                return None
            return self._end_entry(trade, TradeStatus.REJECTED, reason)
        if trade.status == TradeStatus.CLOSING and trade.close_link == link:
            trade.status, trade.close_link = advance(trade.record.id, trade.status, TradeStatus.OPEN), None
        return None

    def on_funding(self, fee: FundingFee) -> None:
        """A funding settlement on a held position, booked once on its trade (part of its net PnL)."""
        trade = next((t for t in self.trades.values() if t.status in HELD_STATES and t.record.symbol == fee.symbol
                      and fee.time > t.record.entry_time), None)  # entered at the settlement: not its
        if trade is None or fee.exec_id in trade.seen:
            return
        trade.seen.add(fee.exec_id)
        trade.record.funding -= fee.fee  # Bybit's fee is what the account paid
        self.events.append(LedgerEvent("funding", _copy(trade.record)))

    def drain_ended(self) -> list[EntryEnded]:
        ended, self.ended = self.ended, []
        return ended

    def _maybe_open(self, trade: OpenTrade) -> None:
        r = trade.record
        filled = sum((f.qty for f in trade.fills), Decimal(0))
        target = trade.entry_filled if trade.entry_filled is not None else r.qty
        if filled <= 0 or filled < target:
            return
        fills, trade.fills = trade.fills, []
        trade.status = advance(r.id, trade.status, TradeStatus.OPEN)
        r.qty = filled  # a partly filled entry is a trade of what filled
        r.entry_price, r.entry_time, r.fees = _vwap(fills), fills[-1].time, sum((f.fee for f in fills), Decimal(0))
        self.events.append(LedgerEvent("open", _copy(r), [_order(r, fills, fills[-1].order_link_id)]))
        if trade.close_requested:  # /close came while the entry was in flight
            self.broker.submit(self.begin_close(r.id, order_link_id(trade.base, "close")))

    def _end_entry(self, trade: OpenTrade, status: TradeStatus, reason: str) -> EntryEnded:
        advance(trade.record.id, trade.status, status)
        del self.trades[trade.record.id]
        ended = EntryEnded(trade.record.id, trade.record.signal_id, trade.record.symbol, status, reason)
        self.ended.append(ended)
        return ended

    def _close(self, trade: OpenTrade, price: Decimal, at: datetime, fee: Decimal, reason: str,
               order: OrderRecord | None, *, estimated: bool = False) -> None:
        r = trade.record
        advance(r.id, trade.status, TradeStatus.CLOSED)
        direction = trade.direction
        r.status, r.exit_price, r.exit_time, r.exit_reason = "closed", price, at, reason
        r.exit_estimated = estimated
        r.fees += fee
        r.gross_pnl = (price - r.entry_price) * r.qty * direction
        r.net_pnl = r.gross_pnl - r.fees + r.funding
        r.pnl_pct = float((price - r.entry_price) / r.entry_price * direction * 100)
        risk_per_unit = abs(r.entry_price - trade.initial_stop)
        r.realized_r = float((price - r.entry_price) * direction / risk_per_unit) if risk_per_unit else None
        del self.trades[r.id]
        self.state.realize(r.net_pnl, at)
        if r.net_pnl <= 0:
            self.risk.on_loss(self.state, r.symbol, int(at.timestamp() * 1000))
        self.events.append(LedgerEvent("close", _copy(r), [order] if order else []))

    # --- recovery decisions (core/recovery.py decides when; these do it) -------------------------------------
    def adopt(self, position: Position, base: str, at: datetime) -> TradeRecord:
        """An exchange position becomes an open trade exactly as the exchange reports it (its own SL/TP, if any:
        the desk never invents one)."""
        tid = trade_id(base)
        record = TradeRecord(tid, self.config.id, None, position.symbol, None, position.side, "open", self.mode,
                             position.qty, position.leverage, position.entry_price, position.opened_at or at,
                             position.stop_loss, position.take_profit)
        stop = position.stop_loss if position.stop_loss is not None else position.entry_price
        self.trades[tid] = OpenTrade(record, stop, TradeStatus.OPEN)
        self.events.append(LedgerEvent("open", _copy(record)))
        return record

    def adjust_qty(self, tid: str, qty: Decimal) -> Decimal:
        """The exchange's quantity becomes the trade's (an audited adjustment); returns the old one."""
        r = self.trades[tid].record
        old, r.qty = r.qty, qty
        self.events.append(LedgerEvent("adjust", _copy(r)))
        return old

    def mark_closed(self, tid: str, price: Decimal, at: datetime, *, estimated: bool) -> TradeRecord:
        """Closed by an admin's decision: the position is gone at the exchange, no execution tells how."""
        trade = self.trades[tid]
        self._close(trade, price, at, Decimal(0), "reconciled_manual", None, estimated=estimated)
        return self.events[-1].trade

    # --- after a restart (live): the ledger's open trades, then the exchange's word on them ---------------------
    def load_open(self, trades: list[TradeRecord]) -> None:
        for r in trades:
            if r.status == "open" and r.id not in self.trades:
                self.trades[r.id] = OpenTrade(r, r.stop_loss if r.stop_loss is not None else r.entry_price,
                                              TradeStatus.OPEN)

    def pending(self) -> list[OpenTrade]:
        return [t for t in self.trades.values() if t.status == TradeStatus.PENDING]

    def held(self) -> list[OpenTrade]:
        return [t for t in self.trades.values() if t.status in HELD_STATES]

    def apply_reconciliation(self, rec: Reconciliation) -> None:
        for fill in rec.entries:
            self.on_fill(fill)
        for close in rec.closes:
            trade = self.trades.get(close.trade_id)
            if trade is None or trade.status not in HELD_STATES:
                continue
            last = close.fills[-1]
            purpose = {"tp": "tp", "sl": "sl"}.get(close.reason, "close")
            link = last.order_link_id or order_link_id(trade.base, purpose)  # type: ignore[arg-type]
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
            if trade.status != TradeStatus.OPEN or r.symbol != candle.symbol or r.stop_loss is None:
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
                self.broker.set_stop(r.symbol, stop, trade.side)

    def entry_intent(self, t: OpenTrade) -> OrderIntent:
        """The pending trade's entry order: market; or a post-only limit at the signal's entry price, and once
        that ended unfilled, the market fallback bounded at `fallback_max_move_bps` past the limit price (both
        derive their link id from the signal: each is sent at most once)."""
        r, c = t.record, self.config
        if t.fallback:
            move = Decimal(repr(c.fallback_max_move_bps)) / Decimal(10_000)
            bound = r.entry_price * (1 + move * t.direction)
            return OrderIntent(r.bot_id, t.base, r.symbol, t.side, r.qty, r.leverage, order_link_id(t.base, "fallback"),
                               r.stop_loss, r.take_profit, price_bound=bound)
        if c.entry_order == "limit":
            return OrderIntent(r.bot_id, t.base, r.symbol, t.side, r.qty, r.leverage, order_link_id(t.base, "open"),
                               r.stop_loss, r.take_profit, order_type="Limit", price=r.entry_price)
        return OrderIntent(r.bot_id, t.base, r.symbol, t.side, r.qty, r.leverage, order_link_id(t.base, "open"),
                           r.stop_loss, r.take_profit)

    # --- state --------------------------------------------------------------------------------------------
    def equity(self) -> Decimal:
        return self.broker.equity()

    def as_json(self) -> dict[str, Any]:
        return {"risk": self.state.as_json(), "broker": self.broker.as_json(), "foreign": sorted(self.foreign),
                "trades": [{"record": LedgerEvent("open", t.record).as_json()["trade"],
                            "initial_stop": str(t.initial_stop), "status": str(t.status), "stop_moved": t.stop_moved,
                            "close_link": t.close_link, "close_requested": t.close_requested,
                            "fallback": t.fallback, "seen": sorted(t.seen)}
                           for t in self.trades.values()]}

    def restore(self, doc: dict[str, Any]) -> None:
        self.state = RiskState.from_json(doc["risk"])
        self.broker.restore(doc["broker"])
        self.foreign = set(doc.get("foreign", []))
        self.trades = {}
        for t in doc["trades"]:
            record = LedgerEvent.from_json({"kind": "open", "trade": t["record"], "orders": []}).trade
            self.trades[record.id] = OpenTrade(record, Decimal(t["initial_stop"]), TradeStatus(t["status"]),
                                               t["stop_moved"], seen=set(t.get("seen", [])),
                                               close_link=t.get("close_link"),
                                               close_requested=bool(t.get("close_requested")),
                                               fallback=bool(t.get("fallback")))


def _copy(r: TradeRecord) -> TradeRecord:
    return TradeRecord(**r.__dict__)


def _vwap(fills: list[Fill]) -> Decimal:
    qty = sum((f.qty for f in fills), Decimal(0))
    return sum((f.price * f.qty for f in fills), Decimal(0)) / qty


def _order(r: TradeRecord, fills: list[Fill], link: str | None) -> OrderRecord:
    last = fills[-1]
    qty = sum((f.qty for f in fills), Decimal(0))
    return OrderRecord(link or last.exec_id, r.bot_id, r.id, last.symbol, last.side,
                       last.stop_order_type or last.order_type,
                       qty, "Filled", fills[0].time, last.exchange_order_id, None, last.reduce_only, last.time, qty,
                       _vwap(fills), sum((f.fee for f in fills), Decimal(0)))
