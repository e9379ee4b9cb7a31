"""The replay summary (`--json`) and the operator report `make run` prints: pure functions of engine
counters and closed phantoms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.phantom import Phantom, PhantomStats, phantom_digest


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
    lines += ["", f"throughput {doc['candles_per_s'] or 0:,.0f} candles/s   "
                  f"phantom digest {doc['phantom_digest'][:16]}…"]
    return lines
