"""What a user runs: the whole `python -m bot replay` command (interpreter start, imports, migrations, reading
the candle files, the replay, the report) on the shared 4-pair full range (2020-12..2021-07, 15m + 5m), as
candles per second of wall-clock time, with the ML filter (the default) and with `--no-ml`, in one run.

    python -m bench.replay_command

- the whole command with the filter, vs the same command with `--no-ml` (the in-run baseline): goal >= 0.8x;
- the whole command with `--no-ml`, vs the pre-issue-15 figure on this machine (21,500 candles/s, measured
  2026-11-24 when its neighbours were quiet: a reference, not an in-run baseline; the ratio says how far);
- start-up: the same command over one hour of candles (what it costs before and around the first candle),
  vs the interpreter starting and importing nothing of the desk (`python -c pass`).
Each command runs twice, alternating, on a fresh SQLite database; the faster of the two counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.data import BINANCE
from bench.table import print_rows

ROOT = Path(__file__).resolve().parent.parent
BEFORE_NO_ML = 21_500.0  # candles/s of the whole `replay --no-ml` command before issue 15 (README, 2026-11-24)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "SECRET_KEY": "b" * 40, "LOG_LEVEL": "WARNING"}


def _replay(folder: Path, name: str, *extra: str) -> tuple[float, dict[str, Any]]:
    """(wall seconds, the JSON summary) of one fresh replay command."""
    args = [sys.executable, "-m", "bot", "replay", "--data", str(BINANCE), "--db", f"sqlite:///{folder / name}.db",
            "--fresh", "--json", *extra]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=folder, env=_env(), capture_output=True, text=True, timeout=1800)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"replay {' '.join(extra)} failed: {done.stderr[-2000:]}")
    return took, json.loads(done.stdout.strip().splitlines()[-1])


def measure(rounds: int = 2) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ml, no_ml = [], []
        for k in range(rounds):
            no_ml.append(_replay(folder, f"n{k}", "--no-ml"))
            ml.append(_replay(folder, f"m{k}"))
        hour = ["--from", "2021-07-17T00:00", "--to", "2021-07-17T01:00"]
        startup = min(_replay(folder, f"s{k}", *hour)[0] for k in range(rounds))
        python = []
        for _ in range(rounds):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            python.append(time.perf_counter() - started)
    (t_ml, doc_ml), (t_no, doc_no) = min(ml, key=lambda r: r[0]), min(no_ml, key=lambda r: r[0])
    return {"candles": doc_no["candles"], "ml_s": t_ml, "no_ml_s": t_no, "ml_rate": doc_ml["candles"] / t_ml,
            "no_ml_rate": doc_no["candles"] / t_no, "startup_s": startup, "python_s": min(python),
            "ml_loop_rate": doc_ml["candles_per_s"], "no_ml_loop_rate": doc_no["candles_per_s"],
            "ml_lift_r": doc_ml["ml_lift_r"], "scored": doc_ml["scored_signals"],
            "same_digests": doc_ml["ledger_digest"] == doc_no["ledger_digest"]}


def run() -> list[dict[str, Any]]:
    m = measure()
    return [
        {"name": f"replay command, filter on: {m['candles']:,} candles, 4 pairs, 15m+5m (whole command, wall clock)",
         "figure": m["ml_rate"], "unit": "candles/s", "baseline": m["no_ml_rate"],
         "ratio": m["ml_rate"] / m["no_ml_rate"], "goal": ">= 0.8x the same command with --no-ml (the baseline)",
         "met": m["ml_rate"] >= 0.8 * m["no_ml_rate"]},
        {"name": "replay command --no-ml (whole command, wall clock)", "figure": m["no_ml_rate"], "unit": "candles/s",
         "baseline": BEFORE_NO_ML, "ratio": m["no_ml_rate"] / BEFORE_NO_ML,
         "goal": ">= 2x the pre-issue figure (baseline: 21,500/s, a reference from 2026-11-24, not in-run)",
         "met": m["no_ml_rate"] >= 2 * BEFORE_NO_ML},
        {"name": "replay command over one hour of candles (start-up, first candle, report)", "figure": m["startup_s"],
         "unit": "s", "baseline": m["python_s"], "ratio": m["startup_s"] / m["python_s"],
         "goal": "< 1.5 s (baseline: python -c pass)", "met": m["startup_s"] < 1.5},
    ]


if __name__ == "__main__":
    print_rows(run())
