"""RiskGate: position size from the stop distance, and every guard that may block a signal.

Each rejection is a short sentence that lands in `signals.reason`. Checks, in order: bot paused or
halted; a critical recovery item pending; drawdown guard (halts the bot: resuming is an operator
decision); daily loss limit; max open positions; one position per symbol; win-rate breaker per
strategy; cooldown on a symbol after a loss; margin; exchange minimums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from core.config import BotConfig
from core.instruments import Instruments
from core.signal import Signal

HUNDRED = Decimal(100)


def _plain(d: Decimal) -> str:
    """20.0000000000 (as the database returns it) -> 20."""
    return format(d.normalize(), "f")


@dataclass
class RiskState:
    """The money side of a bot, saved in its state snapshots (JSON-able through as_json/from_json)."""

    equity: Decimal
    peak_equity: Decimal
    day: str = ""  # UTC date the daily figures belong to
    day_start_equity: Decimal = Decimal(0)
    day_pnl: Decimal = Decimal(0)
    halted: bool = False
    halt_reason: str | None = None
    paused: bool = False
    critical_pending: bool = False
    cooldown_until_ms: dict[str, int] = field(default_factory=dict)

    @property
    def drawdown_pct(self) -> Decimal:
        return (self.peak_equity - self.equity) / self.peak_equity * HUNDRED if self.peak_equity > 0 else Decimal(0)

    def roll_day(self, at: datetime) -> None:
        day = at.date().isoformat()
        if day != self.day:
            self.day, self.day_start_equity, self.day_pnl = day, self.equity, Decimal(0)

    def realize(self, net_pnl: Decimal, at: datetime) -> None:
        self.roll_day(at)
        self.equity += net_pnl
        self.day_pnl += net_pnl
        self.peak_equity = max(self.peak_equity, self.equity)

    def resume(self) -> None:
        """An operator accepted the drawdown of a halt: trade again, the drawdown measured from the equity now."""
        self.halted, self.halt_reason, self.peak_equity = False, None, self.equity

    def as_json(self) -> dict[str, Any]:
        return {"equity": str(self.equity), "peak_equity": str(self.peak_equity), "day": self.day,
                "day_start_equity": str(self.day_start_equity), "day_pnl": str(self.day_pnl),
                "halted": self.halted, "halt_reason": self.halt_reason, "paused": self.paused,
                "critical_pending": self.critical_pending, "cooldown_until_ms": dict(self.cooldown_until_ms)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RiskState:
        return cls(Decimal(doc["equity"]), Decimal(doc["peak_equity"]), doc.get("day", ""),
                   Decimal(doc.get("day_start_equity", "0")), Decimal(doc.get("day_pnl", "0")),
                   bool(doc.get("halted")), doc.get("halt_reason"), bool(doc.get("paused")),
                   bool(doc.get("critical_pending")), dict(doc.get("cooldown_until_ms", {})))


@dataclass(frozen=True, slots=True)
class Sizing:
    qty: Decimal
    leverage: Decimal
    notional: Decimal
    risk_usd: Decimal


@dataclass(frozen=True, slots=True)
class OpenExposure:
    symbol: str
    notional: Decimal


class RiskGate:
    def __init__(self, config: BotConfig, instruments: Instruments) -> None:
        self.config = config
        self.instruments = instruments

    def size(self, signal: Signal, equity: Decimal, open_notional: Decimal = Decimal(0)) -> Sizing | str:
        """Quantity risking the configured amount at the stop, capped by leverage and notional limits."""
        c = self.config
        if equity <= 0:
            return "no equity left"
        risk_usd = c.risk_usd if c.risk_usd is not None else equity * (c.risk_pct or Decimal(0)) / HUNDRED
        stop_distance = abs(signal.entry - signal.stop_loss)
        qty = risk_usd / stop_distance
        caps = [equity * c.max_leverage - open_notional]
        if c.max_position_notional is not None:
            caps.append(c.max_position_notional)
        max_notional = min(caps)
        if max_notional <= 0:
            return f"not enough margin: open positions use {open_notional:.2f} of {equity * c.max_leverage:.2f}"
        qty = min(qty, max_notional / signal.entry)
        inst = self.instruments.get(signal.symbol, float(signal.entry))
        qty = inst.qty(qty)
        notional = qty * signal.entry
        if qty < inst.min_qty or notional < inst.min_notional:
            return (f"size {qty} {signal.symbol} ({notional:.2f} USDT) is below the exchange minimum "
                    f"({inst.min_qty} / {inst.min_notional} USDT)")
        leverage = max(Decimal(1), (notional / equity).to_integral_value(rounding=ROUND_CEILING))
        return Sizing(qty, min(leverage, c.max_leverage), notional, (qty * stop_distance).quantize(Decimal("0.01")))

    def check(self, signal: Signal, state: RiskState, open_positions: list[OpenExposure],
              strategy_win_rate: tuple[float, int]) -> str | None:
        c = self.config
        if state.paused:
            return "bot paused by the operator"
        if state.halted:
            return f"bot halted: {state.halt_reason}"
        if state.critical_pending:
            return "a critical recovery item is pending: no new entries until an admin decides"
        if c.drawdown_guard_pct is not None and state.drawdown_pct >= c.drawdown_guard_pct:
            state.halted = True
            state.halt_reason = (f"drawdown {state.drawdown_pct:.1f}% from the peak {state.peak_equity:.2f} "
                                 f"reached the {_plain(c.drawdown_guard_pct)}% guard")
            return f"bot halted: {state.halt_reason}"
        state.roll_day(signal.time)
        if c.daily_loss_limit_pct is not None and state.day_start_equity > 0:
            loss_pct = -state.day_pnl / state.day_start_equity * HUNDRED
            if loss_pct >= c.daily_loss_limit_pct:
                return f"daily loss limit: {loss_pct:.2f}% lost today (limit {_plain(c.daily_loss_limit_pct)}%)"
        if len(open_positions) >= c.max_positions:
            return f"max open positions ({c.max_positions}) reached"
        if any(p.symbol == signal.symbol for p in open_positions):
            return f"a {signal.symbol} position is already open"
        rate, outcomes = strategy_win_rate
        if outcomes >= c.breaker_min_outcomes and rate < c.win_rate_floor:
            return (f"win-rate breaker: {signal.strategy} won {rate:.0%} of its last {outcomes} outcomes "
                    f"(floor {c.win_rate_floor:.0%})")
        until = state.cooldown_until_ms.get(signal.symbol)
        if until is not None and signal.time.timestamp() * 1000 < until:
            return f"cooldown after a loss on {signal.symbol}"
        return None

    def on_loss(self, state: RiskState, symbol: str, at_ms: int) -> None:
        if self.config.loss_cooldown_minutes:
            state.cooldown_until_ms[symbol] = at_ms + self.config.loss_cooldown_minutes * 60_000
