"""MarketState memory for 200 symbols × 2 intervals × 1000 candles.

    python -m bench.market

Measured as the growth of the process's resident memory while the state fills (each measurement in a
fresh subprocess, so one does not reuse the other's freed memory). Baseline, same process layout: the
seed systems' pattern of one pandas DataFrame per (symbol, interval) with the candles and their
indicator columns.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

SYMBOLS, INTERVALS, CANDLES = 200, ("15", "3"), 1000


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _fill(kind: str) -> float:
    """Runs in a subprocess: MB of resident memory the filled structure added."""
    import numpy as np
    import pandas as pd

    from core.market.candle import INTERVAL_MS, Candle, ms_to_dt
    from core.market.state import MarketState

    rng = np.random.default_rng(1)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, CANDLES)))
    before = _rss_kb()
    keep: Any
    if kind == "state":
        keep = MarketState(capacity=CANDLES)
        for s in range(SYMBOLS):
            for iv in INTERVALS:
                for i, p in enumerate(prices):
                    keep.update(Candle(f"S{s}USDT", iv, ms_to_dt(i * INTERVAL_MS[iv]), p, p * 1.001, p * 0.999, p, 5.0))
    else:
        keep = {}
        cols = ["open", "high", "low", "close", "volume", "atr", "ema_fast", "ema_mid", "ema_slow", "rsi", "bb_mid",
                "bb_upper", "bb_lower", "adx", "vol_z"]
        for s in range(SYMBOLS):
            for iv in INTERVALS:
                frame = pd.DataFrame({c: prices.copy() for c in cols})
                frame.index = pd.to_datetime(np.arange(CANDLES) * INTERVAL_MS[iv], unit="ms", utc=True)
                keep[(f"S{s}USDT", iv)] = frame
    return (_rss_kb() - before) / 1024


def _measure(kind: str) -> float:
    out = subprocess.run([sys.executable, "-m", "bench.market", "--child", kind], capture_output=True, text=True,
                         check=True)
    return float(json.loads(out.stdout)["mb"])


def run() -> list[dict[str, Any]]:
    state, frames = _measure("state"), _measure("frames")
    return [{"name": "MarketState 200 symbols x 2 intervals x 1000 candles", "figure": state, "unit": "MB",
             "baseline": frames, "ratio": frames / state if state else float("inf"),
             "goal": "< 100 MB resident (baseline: pandas frame per series)", "met": state < 100}]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps({"mb": _fill(sys.argv[2])}))
    else:
        from bench.table import print_rows

        print_rows(run())
