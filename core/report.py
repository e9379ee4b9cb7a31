"""The replay summary (`--json`), the backtest figures and the operator report (printed, or Markdown
for `--out`): pure functions of engine counters, closed phantoms, closed trades, the replayed candles
and the halts the replay saw. Every metric comes from core.stats (one definition per rule)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypedDict

from core.ledger import TradeRecord, ledger_digest
from core.market.candle import INTERVAL_MS, ms_to_dt
from core.market.series import CandleSeries
from core.phantom import Phantom, PhantomStats, phantom_digest
from core.stats import (
    MIN_RATIO_DAYS,
    Summary,
    TradeFacts,
    breakdown,
    buy_and_hold,
    calmar,
    daily_returns,
    equity_curve,
    facts_of,
    monthly_returns,
    summarize,
    worst_drawdown,
)

TOP_REASONS = 5
OUTCOMES = ("EXECUTED", "REJECTED", "BLOCKED")


def summary(counters: dict[str, int], closed: Sequence[Phantom], elapsed_s: float, processed: int) -> dict[str, Any]:
    scored = [p for p in closed if p.exit_reason != "gap"]
    wins = sum(1 for p in scored if (p.realized_r or 0) > 0)
    by_strategy: dict[str, dict[str, Any]] = {}
    for p in closed:
        s = by_strategy.setdefault(p.strategy, {"signals": 0, "wins": 0, "sum_r": 0.0})
        s["signals"] += 1
        s["wins"] += (p.realized_r or 0) > 0
        s["sum_r"] += p.realized_r or 0.0
    for s in by_strategy.values():
        s["win_rate"] = round(s["wins"] / s["signals"], 4) if s["signals"] else None
        s["avg_r"] = round(s["sum_r"] / s["signals"], 4) if s["signals"] else None
        s["sum_r"] = round(s["sum_r"], 4)
    return {
        "candles": counters.get("candles", 0),
        "signals": counters.get("signals", 0),
        "executed": counters.get("signals_executed", 0),
        "rejected": counters.get("signals_rejected", 0),
        "blocked": counters.get("signals_blocked", 0),
        "phantoms_closed": len(closed),
        "phantom_win_rate": round(wins / len(scored), 4) if scored else None,
        "gaps": counters.get("gaps", 0),
        "strategies": dict(sorted(by_strategy.items())),
        "elapsed_s": round(elapsed_s, 3),
        "candles_per_s": round(processed / elapsed_s, 1) if elapsed_s > 0 else None,
        "phantom_digest": phantom_digest(closed),
    }


# --- the replayed period --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Period:
    start: datetime  # open of the first candle replayed
    end: datetime  # close of the last one

    @property
    def span(self) -> tuple[date, date]:
        """The UTC calendar days it touches (the days of the daily returns)."""
        return self.start.date(), (self.end - timedelta(microseconds=1)).date()

    @property
    def days(self) -> int:
        first, last = self.span
        return (last - first).days + 1


def replayed(series: Sequence[CandleSeries], start_ms: int | None, end_ms: int | None,
             slow: str) -> tuple[Period, dict[str, tuple[float, float]]] | None:
    """The period the feed streams ([start_ms, end_ms) of open times) and each symbol's first and last
    close of the slow interval in it (buy-and-hold); None when the window holds no candle."""
    windows = [w for w in (s.window(start_ms, end_ms) for s in series) if len(w)]
    if not windows:
        return None
    period = Period(ms_to_dt(min(int(w.open_ms[0]) for w in windows)),
                    ms_to_dt(max(int(w.open_ms[-1]) + INTERVAL_MS[w.interval] for w in windows)))
    closes = {w.symbol: (float(w.close[0]), float(w.close[-1])) for w in windows if w.interval == slow}
    return period, closes


# --- halts -----------------------------------------------------------------------------------------------
class HaltRow(TypedDict):
    at: str  # ISO UTC
    reason: str
    resumed_at: str | None


@dataclass(slots=True)
class Halt:
    """A drawdown halt the replay saw (the time of the candle whose signal tripped the guard)."""

    at: datetime
    reason: str
    resumed_at: datetime | None = None

    def as_json(self) -> HaltRow:
        return {"at": self.at.isoformat(), "reason": self.reason,
                "resumed_at": None if self.resumed_at is None else self.resumed_at.isoformat()}

    @classmethod
    def from_json(cls, row: HaltRow) -> Halt:
        return cls(datetime.fromisoformat(row["at"]), row["reason"],
                   None if row["resumed_at"] is None else datetime.fromisoformat(row["resumed_at"]))


def halted_share(halts: Sequence[Halt], period: Period) -> float:
    """The share of the period spent halted (a halt never resumed lasts to the period's end)."""
    length = (period.end - period.start).total_seconds()
    halted = sum(max(0.0, (min(h.resumed_at or period.end, period.end) - h.at).total_seconds()) for h in halts)
    return halted / length if length > 0 else 0.0


# --- signals by outcome ----------------------------------------------------------------------------------
class ReasonCount(TypedDict):
    reason: str
    count: int


_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def reason_kind(reason: str | None) -> str:
    """A reason with its figures blanked, so "daily loss limit: 5.10% lost today" counts with 6.64%."""
    return _NUMBER.sub("…", reason) if reason else "(none)"


def signal_reasons(rows: Iterable[tuple[str, str | None, int]], top: int = TOP_REASONS) -> dict[str, list[ReasonCount]]:
    """(action, reason, signals) rows of the signals table -> the top reasons of each outcome."""
    by: dict[str, Counter[str]] = {a: Counter() for a in OUTCOMES}
    for action, reason, n in rows:
        by.setdefault(action, Counter())[reason_kind(reason)] += n
    return {a.lower(): [{"reason": r, "count": n} for r, n in sorted(c.items(), key=lambda x: (-x[1], x[0]))[:top]]
            for a, c in by.items()}


def funding_note(symbols: Sequence[str], funding_missing: Sequence[str] | None) -> str:
    """Which symbols' PnL carries no funding: the replay's own list, or every symbol when it has none."""
    missing = list(symbols) if funding_missing is None else list(funding_missing)
    if not missing:
        return "funding: every symbol replayed with its funding-rate series"
    return f"funding not modelled for {', '.join(missing)} (no funding-rate data: their PnL carries no funding)"


# --- trades ---------------------------------------------------------------------------------------------
class Group(TypedDict):
    trades: int
    win_rate: float | None
    profit_factor: float | None
    expectancy_r: float | None
    net_pnl: float
    fees: float
    funding: float
    avg_holding_h: float | None


class Month(TypedDict):
    month: str
    trades: int
    net_pnl: float
    return_pct: float


class TradeSummary(TypedDict):
    trades_closed: int
    win_rate: float | None
    profit_factor: float | None
    expectancy_r: float | None
    net_pnl: float
    fees: float
    funding: float
    avg_holding_h: float | None
    start_balance: float
    end_balance: float
    return_pct: float
    max_drawdown: float
    max_drawdown_pct: float
    max_drawdown_peak_at: str | None
    max_drawdown_trough_at: str | None
    max_drawdown_recovered_at: str | None  # None: not recovered (or no drawdown)
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    ratio_days: int  # the daily returns they rest on: every day of the period
    ratios_reliable: bool  # at least MIN_RATIO_DAYS
    exit_reasons: dict[str, int]
    by_symbol: dict[str, Group]
    by_strategy: dict[str, Group]
    monthly: list[Month]
    ledger_digest: str


def _group(s: Summary) -> Group:
    return {"trades": s["trades"], "win_rate": _round(s["win_rate"]), "profit_factor": _round(s["profit_factor"]),
            "expectancy_r": _round(s["expectancy_r"]), "net_pnl": round(s["net_pnl"], 2), "fees": round(s["fees"], 2),
            "funding": round(s["funding"], 2), "avg_holding_h": _round(s["avg_holding_h"], 2)}


def closed_facts(trades: Iterable[TradeRecord]) -> list[TradeFacts]:
    """The closed ledger trades as core.stats sees them (the report's and the charts' selection)."""
    return [facts_of(t) for t in trades if t.status == "closed" and t.exit_time is not None and t.net_pnl is not None]


def trade_summary(trades: Sequence[TradeRecord], capital: Decimal, period: Period) -> TradeSummary:
    """The replay's trading figures (closed trades of the ledger) over the replayed period."""
    facts = closed_facts(trades)
    s = summarize(facts, capital, period.span)
    returns = daily_returns(facts, capital, period.span)
    dd = worst_drawdown(equity_curve(facts, capital), float(capital), period.start)
    start = float(capital)
    return {
        "trades_closed": s["trades"], "win_rate": _round(s["win_rate"]), "profit_factor": _round(s["profit_factor"]),
        "expectancy_r": _round(s["expectancy_r"]), "net_pnl": round(s["net_pnl"], 2), "fees": round(s["fees"], 2),
        "funding": round(s["funding"], 2), "avg_holding_h": _round(s["avg_holding_h"], 2),
        "start_balance": round(start, 2), "end_balance": round(start + s["net_pnl"], 2),
        "return_pct": round(s["net_pnl"] / start * 100, 2) if start > 0 else 0.0,
        "max_drawdown": round(s["max_drawdown"], 2), "max_drawdown_pct": round(s["max_drawdown_pct"], 2),
        "max_drawdown_peak_at": dd.peak_at.isoformat() if dd else None,
        "max_drawdown_trough_at": dd.trough_at.isoformat() if dd else None,
        "max_drawdown_recovered_at": dd.recovered_at.isoformat() if dd and dd.recovered_at else None,
        "sharpe": _round(s["sharpe"], 3), "sortino": _round(s["sortino"], 3),
        "calmar": _round(calmar(returns, s["max_drawdown_pct"]), 3),
        "ratio_days": len(returns), "ratios_reliable": len(returns) >= MIN_RATIO_DAYS,
        "exit_reasons": dict(sorted(Counter(t.exit_reason for t in trades
                                            if t.status == "closed" and t.exit_reason).items())),
        "by_symbol": {k: _group(v) for k, v in breakdown(facts, capital, "symbol").items()},
        "by_strategy": {k: _group(v) for k, v in breakdown(facts, capital, "strategy").items()},
        "monthly": [{"month": m.month, "trades": m.trades, "net_pnl": round(m.net_pnl, 2),
                     "return_pct": round(m.ret * 100, 2)} for m in monthly_returns(facts, capital, period.span)],
        "ledger_digest": ledger_digest(trades),
    }


class BuyHoldDoc(TypedDict):
    return_pct: float
    pnl: float
    symbols: dict[str, float]  # symbol -> return %


class PeriodDoc(TypedDict):
    start: str
    end: str
    days: int


class Backtest(TypedDict):
    period: PeriodDoc
    buy_and_hold: BuyHoldDoc | None
    halts: list[HaltRow]
    halted_share: float
    on_halt: str  # stop | resume
    resume_after_h: float | None
    signal_reasons: dict[str, list[ReasonCount]]


def backtest_fields(period: Period, closes: dict[str, tuple[float, float]], capital: Decimal, halts: Sequence[Halt],
                    on_halt: str, resume_after_h: float | None,
                    reasons: Iterable[tuple[str, str | None, int]]) -> Backtest:
    bh = buy_and_hold(closes, capital)
    return {
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat(), "days": period.days},
        "buy_and_hold": None if bh is None else {
            "return_pct": round(bh.ret * 100, 2), "pnl": round(bh.pnl, 2),
            "symbols": {k: round(v * 100, 2) for k, v in bh.by_symbol.items()}},
        "halts": [h.as_json() for h in halts],
        "halted_share": round(halted_share(halts, period), 4),
        "on_halt": on_halt, "resume_after_h": resume_after_h if on_halt == "resume" else None,
        "signal_reasons": signal_reasons(reasons),
    }


def _round(x: float | None, places: int = 4) -> float | None:
    return None if x is None else round(x, places)


# --- rendering: one list of blocks, printed as text or written as Markdown ------------------------------------
@dataclass(frozen=True, slots=True)
class Heading:
    text: str


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    text_columns: int = 1  # the leading columns that hold text (left-aligned); the others are figures


Block = str | Heading | Table  # a str is one line of text ("" separates paragraphs)


def render_text(blocks: Iterable[Block]) -> list[str]:
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lines.append(f"== {b.text} ==")
        elif isinstance(b, Table):
            cells = [b.header, *b.rows]
            widths = [max(len(r[i]) for r in cells) for i in range(len(b.header))]
            lines += ["", b.title] if b.title else [""]
            lines += [("  " + "  ".join(c.ljust(w) if i < b.text_columns else c.rjust(w)
                                        for i, (c, w) in enumerate(zip(r, widths, strict=True)))).rstrip()
                      for r in cells]
        else:
            lines.append(b)
    return lines


def render_markdown(blocks: Iterable[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += [f"# {b.text}", ""]
        elif isinstance(b, Table):
            out += ["", f"**{b.title}**", ""] if b.title else [""]
            align = ["---" if i < b.text_columns else "---:" for i in range(len(b.header))]
            out += ["| " + " | ".join(b.header) + " |", "|" + "|".join(align) + "|"]
            out += ["| " + " | ".join(r) + " |" for r in b.rows]
            out.append("")
        else:
            out.append(f"{b}  " if b.strip() else "")  # two spaces: a line break inside a paragraph
    return "\n".join(out).strip() + "\n"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def _r(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f}R"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "—" if x is None else format(x, fmt)


def _when(iso: str | None, missing: str = "—") -> str:
    return missing if iso is None else datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")


def _group_rows(groups: dict[str, Group]) -> list[tuple[str, ...]]:
    return [(k, f"{g['trades']:,}", _pct(g["win_rate"]), _num(g["profit_factor"]), _r(g["expectancy_r"]),
             f"{g['net_pnl']:+,.2f}", f"{g['fees']:,.2f}", f"{g['funding']:+,.2f}", _num(g["avg_holding_h"], ".1f"))
            for k, g in groups.items()]


GROUP_HEADER = ("", "trades", "win rate", "PF", "exp. R", "net PnL", "fees", "funding", "avg hold h")


def _backtest_blocks(doc: dict[str, Any]) -> list[Block]:
    p = doc["period"]
    blocks: list[Block] = [
        f"period {_when(p['start'])} → {_when(p['end'])} UTC ({p['days']} days)   balance "
        f"{doc['start_balance']:,.2f} → {doc['end_balance']:,.2f} USDT ({doc['return_pct']:+.2f}%)"
        + (f"   {doc['open_at_end']} trade(s) still open at the end (not counted)" if doc.get("open_at_end") else ""),
    ]
    if (bh := doc["buy_and_hold"]) is not None:
        blocks.append(f"buy & hold, equal weights in {', '.join(bh['symbols'])} (first to last close, no fees): "
                      f"{bh['return_pct']:+.2f}% ({bh['pnl']:+,.2f} USDT)")
    halts: list[HaltRow] = doc["halts"]
    share = f"{doc['halted_share'] * 100:.1f}% of the period"
    if not halts:
        blocks.append("halts: none")
    elif doc["on_halt"] == "stop":
        blocks.append(f"HALTED on {_when(halts[0]['at'])} UTC and never resumed (--on-halt stop): the bot spent "
                      f"{share} halted, taking no new trades")
    else:
        blocks.append(f"HALTED {len(halts)} time(s), each resumed {doc['resume_after_h']:g} h later as an operator "
                      f"would (--on-halt resume, the drawdown then measured from the equity at the resume): "
                      f"{share} halted")
    if halts:
        blocks.append(Table("halts", ("halted (UTC)", "reason", "resumed (UTC)"),
                            [(_when(h["at"]), h["reason"], _when(h["resumed_at"], "not resumed")) for h in halts], 3))
    blocks += ["", doc["funding_note"]]
    return blocks


def _trade_blocks(doc: dict[str, Any]) -> list[Block]:
    flag = "" if doc["ratios_reliable"] else f" — fewer than {MIN_RATIO_DAYS} days: not meaningful"
    recovered = _when(doc["max_drawdown_recovered_at"], "not recovered")
    exits = ", ".join(f"{k} {v:,}" for k, v in doc["exit_reasons"].items()) or "none"
    blocks: list[Block] = [
        "",
        f"trades closed {doc['trades_closed']:,}   win rate {_pct(doc['win_rate'])}   profit factor "
        f"{_num(doc['profit_factor'])}   expectancy {_r(doc['expectancy_r'])}   net PnL {doc['net_pnl']:+,.2f} USDT "
        f"(fees {doc['fees']:,.2f}, funding {doc['funding']:+,.2f})   avg hold {_num(doc['avg_holding_h'], '.1f')} h",
        f"Sharpe {_num(doc['sharpe'])}   Sortino {_num(doc['sortino'])}   Calmar {_num(doc['calmar'])}   "
        f"(daily returns over {doc['ratio_days']} days{flag})",
        f"max drawdown {doc['max_drawdown']:,.2f} USDT ({doc['max_drawdown_pct']:.1f}%)"
        + (f": peak {_when(doc['max_drawdown_peak_at'])}, trough {_when(doc['max_drawdown_trough_at'])}, {recovered}"
           if doc["max_drawdown_peak_at"] else ""),
        f"exits: {exits}",
    ]
    if doc["by_symbol"]:
        blocks.append(Table("by pair", ("pair", *GROUP_HEADER[1:]), _group_rows(doc["by_symbol"])))
        blocks.append(Table("by strategy", ("strategy", *GROUP_HEADER[1:]), _group_rows(doc["by_strategy"])))
    blocks.append(Table("monthly returns", ("month", "trades", "net PnL", "return"),
                        [(m["month"], f"{m['trades']:,}", f"{m['net_pnl']:+,.2f}", f"{m['return_pct']:+.2f}%")
                         for m in doc["monthly"]]))
    return blocks


def _signal_table(doc: dict[str, Any]) -> Table:
    rows: list[tuple[str, ...]] = []
    for outcome in ("executed", "rejected", "blocked"):
        rows.append((outcome, "all", f"{doc[outcome]:,}"))
        rows += [("", r["reason"], f"{r['count']:,}") for r in doc["signal_reasons"].get(outcome, [])]
    return Table("signals by outcome (top reasons)", ("outcome", "reason", "signals"), rows, 2)


def report_blocks(title: str, doc: dict[str, Any], stats: PhantomStats) -> list[Block]:
    """The whole report; the backtest parts when the doc has them (a replay of files or the demo)."""
    blocks: list[Block] = [Heading(title)]
    if "period" in doc:
        blocks += [*_backtest_blocks(doc), ""]
    blocks += [
        f"candles {doc['candles']:,}   signals {doc['signals']:,} (executed {doc['executed']:,}, "
        f"rejected {doc['rejected']:,}, blocked {doc['blocked']:,})   data gaps {doc['gaps']}",
        f"phantoms closed {doc['phantoms_closed']:,}   win rate {_pct(doc['phantom_win_rate'])}",
        Table("", ("strategy", "signals", "win rate", "avg R", "sum R"),
              [(name, f"{s['signals']:,}", _pct(s["win_rate"]), _r(s["avg_r"]), f"{s['sum_r']:+.1f}")
               for name, s in doc["strategies"].items()]),
        "", "taken vs not taken (phantom outcomes):",
    ]
    for strategy in stats.strategies():
        groups = stats.by(strategy=strategy)
        parts = [f"{action.lower()} {g['total']} at {_pct(g['win_rate'])} {_r(g['avg_r'])}"
                 for action, g in groups.actions.items() if action in OUTCOMES]
        blocks.append(f"  {strategy:<16}" + "; ".join(parts))
    if "signal_reasons" in doc:
        blocks.append(_signal_table(doc))
    if "trades_closed" in doc:
        blocks += _trade_blocks(doc)
    if "scored_signals" in doc:
        from core.ml.report import operator_lines  # the ML block only when the replay ran the filter

        blocks += ["", *operator_lines(doc)]
    blocks += ["", f"throughput {doc['candles_per_s'] or 0:,.0f} candles/s   "
                   f"phantom digest {doc['phantom_digest'][:16]}…"]
    return blocks


def operator_report(title: str, doc: dict[str, Any], stats: PhantomStats) -> list[str]:
    return render_text(report_blocks(title, doc, stats))
