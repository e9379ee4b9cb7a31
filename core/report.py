"""The replay summary (`--json`) and the operator report `make run` prints: pure functions of engine
counters and closed phantoms."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from core.ledger import TradeRecord, ledger_digest
from core.phantom import Phantom, PhantomStats, phantom_digest
from core.stats import facts_of, summarize


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


def trade_summary(trades: Sequence[TradeRecord], capital: Decimal) -> dict[str, Any]:
    """The replay's trading figures (closed trades of the ledger) and its digest."""
    facts = [facts_of(t)
             for t in trades if t.status == "closed" and t.exit_time is not None and t.net_pnl is not None]
    s = summarize(facts, capital)
    return {
        "trades_closed": s["trades"], "win_rate": _round(s["win_rate"]), "profit_factor": _round(s["profit_factor"]),
        "net_pnl": _round(s["net_pnl"], 2), "fees": _round(s["fees"], 2), "max_drawdown": _round(s["max_drawdown"], 2),
        "max_drawdown_pct": _round(s["max_drawdown_pct"], 2), "expectancy_r": _round(s["expectancy_r"]),
        "sharpe": _round(s["sharpe"], 3), "ledger_digest": ledger_digest(trades),
        "exit_reasons": dict(sorted(Counter(t.exit_reason for t in trades if t.exit_reason).items())),
    }


def _round(x: float | None, places: int = 4) -> float | None:
    return None if x is None else round(x, places)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def _r(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f}R"


def operator_report(title: str, doc: dict[str, Any], stats: PhantomStats) -> list[str]:
    lines = [
        f"== {title} ==",
        f"candles {doc['candles']:,}   signals {doc['signals']:,} (executed {doc['executed']:,}, "
        f"rejected {doc['rejected']:,}, blocked {doc['blocked']:,})   data gaps {doc['gaps']}",
        f"phantoms closed {doc['phantoms_closed']:,}   win rate {_pct(doc['phantom_win_rate'])}",
        "",
        f"{'strategy':<16}{'signals':>9}{'win rate':>10}{'avg R':>9}{'sum R':>10}",
    ]
    for name, s in doc["strategies"].items():
        lines.append(f"{name:<16}{s['signals']:>9,}{_pct(s['win_rate']):>10}{_r(s['avg_r']):>9}{s['sum_r']:>+10.1f}")
    lines += ["", "taken vs not taken (phantom outcomes):"]
    for strategy in stats.strategies():
        groups = stats.by(strategy=strategy)
        parts = [f"{action.lower()} {g['total']} at {_pct(g['win_rate'])} {_r(g['avg_r'])}"
                 for action, g in groups.items() if action in ("EXECUTED", "REJECTED", "BLOCKED")]
        lines.append(f"  {strategy:<16}" + "; ".join(parts))
    if "trades_closed" in doc:
        lines += ["", f"trades closed {doc['trades_closed']:,}   win rate {_pct(doc['win_rate'])}   "
                      f"profit factor {doc['profit_factor'] or 0:.2f}   net PnL {doc['net_pnl'] or 0:+,.2f} USDT "
                      f"(fees {doc['fees'] or 0:,.2f})   max drawdown {doc['max_drawdown'] or 0:,.2f} USDT "
                      f"({doc['max_drawdown_pct'] or 0:.1f}%)   exits {doc['exit_reasons']}"]
    if "scored_signals" in doc:
        from core.ml.report import operator_lines  # the ML block only when the replay ran the filter

        lines += ["", *operator_lines(doc)]
    lines += ["", f"throughput {doc['candles_per_s'] or 0:,.0f} candles/s   "
                  f"phantom digest {doc['phantom_digest'][:16]}…"]
    return lines
