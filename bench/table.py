"""The one table every benchmark prints: figure, in-run baseline, ratio, goal, met?"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_rows(rows: list[dict[str, Any]], title: str = "phantomdesk benchmarks") -> None:
    table = Table(title=title)
    for column in ("benchmark", "figure", "baseline", "ratio", "goal", "met?"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], f"{r['figure']:,.1f} {r['unit']}", f"{r['baseline']:,.1f}", f"{r['ratio']:,.1f}x",
                      r["goal"], "yes" if r["met"] else "NO")
    Console(width=170).print(table)
