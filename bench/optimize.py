"""Parameter search throughput: `python -m bot optimize` itself, as a user runs it, against a plain replay.

    python -m bench.optimize

On the shared real candles, 4 pairs, one month of 15m + 5m (2021-03), strategy scalp, default walk-forward
(rolling, 4 folds, 25 % out of sample), no ML, a fresh journal study each run:
- one worker: trials per minute, and the speed of a trial's replay (candles replayed by the run's trials per
  second of the run, everything of optimize included: sampling, storage writes, warm-up copies, objective)
  against a plain replay of the same month with the same strategy in memory (core.runner.run over the replay's
  engine, MemoryStore, no ML) measured in this run: goal >= 0.8x;
- two workers (two processes on this 2-core machine): trials per minute against one worker: goal >= 1.7x.
The run's own clock (`run.elapsed_s` of its JSON) times the trials; process start-up and the final report are
not trials. Each command is printed, so a figure can be reproduced by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna

from bench.data import BINANCE, ROOT
from bench.table import print_rows
from bot.optimize import Location, Outcome
from core import runner
from core.config import BotConfig
from core.ledger import MemoryLedger
from core.market.candle import Candle, dt_to_ms
from core.market.replay import WARMUP_CANDLES, ReplayFeed, history_before
from core.persistence import MemoryStore
from storage.candle_files import read_candle_dir
from storage.funding_files import read_funding_dir

STRATEGY = "scalp"
START, END = datetime(2021, 3, 1, tzinfo=UTC), datetime(2021, 4, 1, tzinfo=UTC)
TRIALS = 100  # per measured run: over a minute of one worker; the second worker's start-up is a small part of it


def _command(workers: int) -> list[str]:
    return ["python", "-m", "bot", "optimize", "--data", str(BINANCE), "--strategy", STRATEGY, "--from",
            f"{START:%Y-%m-%d}", "--to", f"{END:%Y-%m-%d}", "--trials", str(TRIALS), "--workers", str(workers),
            "--json"]


def _optimize(workers: int) -> dict[str, Any]:
    command = _command(workers)
    print(f"$ DATA_DIR=<fresh> {' '.join(command)}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, env={**os.environ, "DATA_DIR": tmp},
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"optimize failed: {done.stderr[-2000:]}")
        doc = json.loads(done.stdout.strip().splitlines()[-1])
        study = optuna.load_study(study_name=doc["study"], storage=Location(journal=Path(doc["storage"])).open())
        candles = sum(o.candles for t in study.get_trials(deepcopy=False) if (o := Outcome.of(t)) is not None
                      and o.run == doc["run"]["id"])
    return {"trials": len(doc["run"]["trials"]), "elapsed_s": doc["run"]["elapsed_s"],
            "per_min": doc["run"]["trials_per_min"], "candles": candles}


def _plain_replay() -> float:
    """Candles/s of a plain replay of the month: the replay's engine, warm-up included, in memory, no ML."""
    series = read_candle_dir(BINANCE, intervals=["15", "5"])
    symbols = sorted({s.symbol for s in series})
    config = BotConfig(id="bench", symbols=symbols, strategies={STRATEGY: {}})
    funding = read_funding_dir(BINANCE, symbols)  # none in this folder: as the optimize command reads it
    start_ms, end_ms = dt_to_ms(START), dt_to_ms(END)

    async def stream() -> AsyncIterator[Candle]:
        for candle in ReplayFeed(series, start_ms=start_ms, end_ms=end_ms).candles():
            yield candle

    started = time.perf_counter()
    engine, _ = runner.paper_engine(config, funding)
    report = asyncio.run(runner.run(engine, stream(), MemoryStore(), ledger=MemoryLedger(),
                             history=history_before(series, start_ms, WARMUP_CANDLES)))
    return report.processed / (time.perf_counter() - started)


def run() -> list[dict[str, Any]]:
    plain = max(_plain_replay() for _ in range(2))
    one = _optimize(1)
    two = _optimize(2)
    per_trial = one["candles"] / one["elapsed_s"]  # candles/s of the run's trials, everything included
    candles_per_trial = one["candles"] / one["trials"]
    as_plain = plain / candles_per_trial * 60  # trials/min if a trial cost only its plain replay
    print(f"plain replay {plain:,.0f} candles/s; a trial replays {candles_per_trial:,.0f} candles "
          f"(in-sample windows, pruned trials fewer); 1 worker {per_trial:,.0f} candles/s", file=sys.stderr)
    return [
        {"name": "optimize, 1 worker: trials/min (4 pairs, a month of 15m+5m)", "figure": one["per_min"],
         "unit": "trials/min", "baseline": as_plain, "ratio": per_trial / plain,
         "goal": ">= 0.8x: a trial's replay vs a plain replay (no ML)", "met": per_trial / plain >= 0.8},
        {"name": "optimize, 2 workers on 2 cores", "figure": two["per_min"], "unit": "trials/min",
         "baseline": one["per_min"], "ratio": two["per_min"] / one["per_min"], "goal": ">= 1.7x one worker",
         "met": two["per_min"] / one["per_min"] >= 1.7},
    ]


if __name__ == "__main__":
    print_rows(run())
