"""What a trial is worth: the figures of the closed trades of some windows, and the objective a study
maximizes. Every figure is core.stats' (one definition per rule).

Windows are replayed one by one from the bot's capital, so their figures pool their trades (expectancy,
profit factor) or line their days up one after the other (Sharpe over every day of every window; Calmar
over the same days against the worst drawdown of any window).

Below `min_trades` closed trades a trial has no score: it fails, said why, instead of getting a number
that a handful of lucky trades would make look good. So does an objective that is undefined (a profit
factor without a losing trade, a Sharpe over days that never moved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from core.stats import (
    TradeFacts,
    calmar,
    daily_returns,
    equity_curve,
    expectancy_net_r,
    max_drawdown,
    sharpe,
    summarize,
)

Objective = Literal["expectancy", "profit_factor", "sharpe", "calmar"]
OBJECTIVES: dict[Objective, str] = {
    "expectancy": "expectancy in R after fees and funding",
    "profit_factor": "profit factor",
    "sharpe": "Sharpe of the daily returns",
    "calmar": "Calmar (annualised return / max drawdown)",
}
SHORT: dict[Objective, str] = {"expectancy": "expectancy (net R)", "profit_factor": "profit factor",
                               "sharpe": "Sharpe", "calmar": "Calmar"}


@dataclass(frozen=True, slots=True)
class WindowTrades:
    """The closed trades of one replayed window, and its UTC days."""

    trades: tuple[TradeFacts, ...]
    span: tuple[date, date]


@dataclass(frozen=True, slots=True)
class Figures:
    trades: int
    expectancy: float | None  # in net R
    profit_factor: float | None
    sharpe: float | None
    calmar: float | None
    win_rate: float | None
    net_pnl: float
    max_drawdown_pct: float  # the worst of any window
    days: int

    def value(self, objective: Objective) -> float | None:
        return {"expectancy": self.expectancy, "profit_factor": self.profit_factor, "sharpe": self.sharpe,
                "calmar": self.calmar}[objective]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Figures:
        return cls(**doc)


def figures(windows: Sequence[WindowTrades], capital: Decimal) -> Figures:
    trades = [t for w in windows for t in w.trades]
    pooled = summarize(trades, capital)
    returns: list[float] = []
    worst_dd = 0.0
    for w in windows:
        returns += daily_returns(w.trades, capital, w.span)
        worst_dd = max(worst_dd, max_drawdown([e for _, e in equity_curve(w.trades, capital)], float(capital))[1])
    return Figures(len(trades), expectancy_net_r(trades), pooled["profit_factor"], sharpe(returns),
                   calmar(returns, worst_dd), pooled["win_rate"], pooled["net_pnl"], worst_dd, len(returns))


@dataclass(frozen=True, slots=True)
class Verdict:
    value: float | None  # None: failed
    why: str | None = None  # why it failed


def verdict(f: Figures, objective: Objective, min_trades: int) -> Verdict:
    if f.trades < min_trades:
        return Verdict(None, f"{f.trades} closed trade(s) < --min-trades {min_trades}")
    value = f.value(objective)
    if value is None:
        return Verdict(None, f"{OBJECTIVES[objective]} undefined over these trades")
    return Verdict(value)
