"""`python -m bench` (or `make bench`): every benchmark on the shared real data, one table."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from bench.table import print_rows

MODULES = ("bench.replay_command", "bench.replay", "bench.market", "bench.candles", "bench.ledger", "bench.ml",
           "bench.charts", "bench.telegram", "bench.optimize", "bench.miniapp", "bench.feed")


def main() -> int:
    rows: list[dict[str, Any]] = []
    for name in MODULES:
        rows.extend(importlib.import_module(name).run())
    print_rows(rows)
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
