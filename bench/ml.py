"""The ML filter's costs, each against a baseline measured in the same run.

    python -m bench.ml

- scoring one signal (feature vector + the boosted trees as arrays + calibration + decision), median over
  2,000 signals, vs scikit-learn's own predict_proba of the same fitted trees on one row (it leaves out the
  feature vector, the calibration and the decision);
- a full retrain on 20,000 outcomes (the gate's 5-fold walk-forward against a champion, the block bootstrap of
  the evidence, then the challenger's fit, calibration and serialization), one thread, vs the former
  ensemble's random forest (100 trees, depth 6) fitted alone on 75% of the rows;
- the event loop's worst lateness (a coroutine ticking every 10 ms) while that retrain runs in a
  process pool, vs the same ticker with nothing running.
Synthetic outcomes (38 features, a signal on a few) stand in for 20,000 real ones: the real replay has ~2,200.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from bench.table import print_rows
from core.ml.dataset import FEATURE_NAMES, N_FEATURES, Dataset
from core.ml.evidence import EvidenceRule
from core.ml.filter import FilterSettings, MLScorer
from core.ml.gate import retrain
from core.ml.recipe import TrainConfig
from core.phantom import Phantom
from core.signal import Signal

N = 20_000
T0 = datetime(2024, 1, 1, tzinfo=UTC)
ALWAYS = EvidenceRule(always=True)  # the champion is in force whatever its evidence: the costs are the point


def _outcomes(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    logit = np.log(0.38 / 0.62) + 0.4 * X[:, 0] - 0.3 * X[:, 1] * X[:, 2] + 0.2 * np.abs(X[:, 3])
    return X, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)


def _dataset(n: int) -> Dataset:
    X, y = _outcomes(n)
    opened = np.arange(n, dtype=np.int64) * 900_000
    return Dataset("trend_pullback", tuple(f"{i:08d}" for i in range(n)), X, y, np.where(y == 1, 2.0, -1.0),
                   np.full(n, 2.0), np.ones(n, np.int8), opened, opened + 3_600_000)


def _phantoms(n: int) -> list[Phantom]:
    X, y = _outcomes(n)
    out = []
    for i in range(n):
        at = T0 + timedelta(minutes=15 * i)
        features = dict(zip(FEATURE_NAMES, X[i].tolist(), strict=True))
        p = Phantom(f"{i:08d}", "bench", "BTCUSDT", "15", "trend_pullback", "long", Decimal(100), Decimal(99),
                    Decimal(102), at, "EXECUTED", None, None, None, features)
        win = bool(y[i])
        p.status, p.outcome, p.exit_reason = "closed", "win" if win else "loss", "tp" if win else "sl"
        p.realized_r, p.exit_time = 2.0 if win else -1.0, at + timedelta(hours=1)
        out.append(p)
    return out


def _retrain_s(data: Dataset) -> tuple[float, float, Any]:
    """(seconds for the full retrain, seconds for the former forest alone, the trained model)."""
    from sklearn.ensemble import RandomForestClassifier
    from threadpoolctl import threadpool_limits

    previous = retrain(data.take(slice(0, N - 1_000)), version=N - 1_000, rule=ALWAYS)  # the champion
    started = time.perf_counter()
    result = retrain(data, version=N, champion=previous.model, champion_version=N - 1_000, rule=ALWAYS)
    full = time.perf_counter() - started
    leaf = max(TrainConfig.min_leaf, int(TrainConfig.min_leaf_frac * N * 0.75))
    rf = RandomForestClassifier(n_estimators=100, max_depth=6, min_samples_leaf=leaf, max_features="sqrt",
                                random_state=7, n_jobs=1)
    with threadpool_limits(1):
        started = time.perf_counter()
        rf.fit(data.X[: int(N * 0.75)], data.y[: int(N * 0.75)])
        forest = time.perf_counter() - started
    return full, forest, result


def _scoring_ms(model: Any, data: Dataset) -> tuple[float, float]:
    from core.ml.train import boosted_trees, split

    scorer = MLScorer("bench").adopt("trend_pullback", model, N)
    X, _ = _outcomes(2_000, seed=2)
    signals = [Signal(f"s{i}", "bench", "BTCUSDT", "15", "trend_pullback", "long", Decimal(100), Decimal(99),
                      Decimal(102), T0 + timedelta(minutes=i), dict(zip(FEATURE_NAMES, X[i].tolist(), strict=True)))
               for i in range(len(X))]
    times = []
    for s in signals:
        started = time.perf_counter()
        scorer.score(s)
        times.append(time.perf_counter() - started)
    fitted = boosted_trees(split(data, TrainConfig().calibration_frac)[0], TrainConfig())  # the same trees
    base = []
    for x in X[:500]:
        row = x.reshape(1, -1)
        started = time.perf_counter()
        fitted.predict_proba(row)
        base.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3, statistics.median(base) * 1e3


async def _max_lag_ms(seconds: float | None, work: Any = None) -> tuple[float, float]:
    """Max lateness of a 10 ms ticker while `work` runs (or for `seconds`); (max lag ms, seconds)."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - start - 0.01)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    if work is not None:
        await work
    else:
        await asyncio.sleep(seconds or 1.0)
    done.set()
    await task
    return max(lags) * 1e3, time.perf_counter() - started


async def _loop_lag() -> tuple[float, float, float]:
    scorer = MLScorer("bench", FilterSettings(inline=False))
    for p in _phantoms(N):
        scorer.observe(p)
    with ProcessPoolExecutor(max_workers=1) as pool:
        await asyncio.get_running_loop().run_in_executor(pool, int)  # the worker is up before the clock starts
        lag, took = await _max_lag_ms(None, scorer.retrain_pending(pool))
    idle, _ = await _max_lag_ms(max(min(took, 10.0), 1.0))
    return lag, idle, took


def run() -> list[dict[str, Any]]:
    data = _dataset(N)
    full_s, rf_s, result = _retrain_s(data)
    score_ms, sk_ms = _scoring_ms(result.model, data)
    lag_ms, idle_ms, took = asyncio.run(_loop_lag())
    return [
        {"name": "ml: score one signal (features + trees as arrays + calibration + decision, median)",
         "figure": score_ms * 1e3, "unit": "µs", "baseline": sk_ms * 1e3, "ratio": sk_ms / score_ms,
         "goal": "< 500 µs (baseline: scikit-learn predict_proba of the same trees, 1 row, nothing else)",
         "met": score_ms < 0.5},
        {"name": f"ml: retrain on {N:,} outcomes incl. 5-fold gate + bootstrap", "figure": full_s, "unit": "s",
         "baseline": rf_s, "ratio": rf_s / full_s,
         "goal": "< 20 s, one thread (baseline: the former ensemble's forest fit alone)", "met": full_s < 20.0},
        {"name": f"ml: event-loop max lag during a {took:.1f} s retrain", "figure": lag_ms, "unit": "ms",
         "baseline": idle_ms, "ratio": idle_ms / lag_ms if lag_ms else 0.0,
         "goal": "< 100 ms (baseline: same ticker, no retrain)", "met": lag_ms < 100.0},
    ]


if __name__ == "__main__":
    print_rows(run())
