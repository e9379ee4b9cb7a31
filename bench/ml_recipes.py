"""Which model recipe: each candidate judged by the gate's own walk-forward and evidence, and timed.

    python -m bench.ml_recipes            # synthetic controls + the shared real data (replays it once, ~20 s)

Candidates: the default (30 boosted trees of depth 2 over 32 bins), the former boosting member alone (100
trees of depth 3, 255 bins), and the former ensemble (a 100-tree random forest of depth 6 averaged with that
booster), all with the same purged isotonic calibration and shrinkage. For each:
- synthetic controls, 10 seeds each: outcomes whose win probability moves with one feature (found: the
  evidence bounds above zero), and outcomes independent of every feature (false promotions);
- on the shared real data, per strategy: the pooled out-of-sample EV lift and Brier skill with their 95%
  block-bootstrap bounds;
- the time of one fit on 20,000 rows, one thread (the in-run baseline is the default's).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.ml.dataset import N_FEATURES, Dataset
from core.ml.evidence import EvidenceRule, assess
from core.ml.gate import Candidate, walk_forward
from core.ml.model import Model
from core.ml.recipe import Recipe, TrainConfig

RULE = EvidenceRule()
FORMER_BOOSTER = TrainConfig(iterations=100, max_depth=3, learning_rate=0.05, max_bins=255)
SEEDS = range(10)


@dataclass(frozen=True)
class Averaged:
    """p = mean of a random forest's and a booster's probability, then the default's calibration."""

    members: Any

    def predict(self, X: np.ndarray) -> np.ndarray:
        raw = np.mean([m.predict_proba(X)[:, 1] for m in self.members[0]], axis=0)
        return self.members[1].calibrate(raw)


@dataclass(frozen=True)
class FormerEnsemble:
    """The recipe before issue 15: RF (100 trees, depth 6) + gradient boosting (100 trees, depth 3)."""

    config: TrainConfig = field(default_factory=lambda: FORMER_BOOSTER)

    def fit(self, data: Dataset) -> Averaged:
        from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
        from sklearn.isotonic import IsotonicRegression
        from threadpoolctl import threadpool_limits

        from core.ml.train import split

        c = self.config
        fit, cal = split(data, c.calibration_frac)
        base = data.base_rate
        leaf = max(c.min_leaf, int(c.min_leaf_frac * len(fit)))
        with threadpool_limits(1):
            members = [
                RandomForestClassifier(n_estimators=100, max_depth=6, min_samples_leaf=leaf, max_features="sqrt",
                                       random_state=c.seed, n_jobs=1).fit(fit.X, fit.y),
                HistGradientBoostingClassifier(max_iter=c.iterations, max_depth=c.max_depth,
                                               learning_rate=c.learning_rate, min_samples_leaf=leaf,
                                               early_stopping=False, random_state=c.seed).fit(fit.X, fit.y)]
        calib = Model(None, np.array([0.0, 1.0]), np.array([base, base]), 0, base, c.shrink_rows)
        if len(cal):
            raw = np.mean([m.predict_proba(cal.X)[:, 1] for m in members], axis=0)
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, cal.y)
            calib.iso_x, calib.iso_y, calib.n_cal = iso.X_thresholds_, iso.y_thresholds_, len(cal)
        return Averaged((tuple(members), calib))


RECIPES: dict[str, Any] = {
    "default: 30 trees, depth 2": Recipe(),
    "booster: 100 trees, depth 3": Recipe(FORMER_BOOSTER),
    "former: RF 100 + booster 100": FormerEnsemble(),
}


def synthetic(n: int, strength: float, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    y = (rng.random(n) < 1 / (1 + np.exp(-(np.log(0.36 / 0.64) + strength * X[:, 11])))).astype(np.int8)
    opened = np.arange(n, dtype=np.int64) * 1_800_000
    hold = rng.integers(2, 25, size=n) * 900_000
    order = np.argsort(opened + hold, kind="stable")
    return Dataset("control", tuple(f"{i:06d}" for i in order), X[order], y[order],
                   np.where(y[order] == 1, 2.0, -1.0), np.full(n, 2.0), np.ones(n, np.int8), opened[order],
                   (opened + hold)[order])


def judged(data: Dataset, recipe: Any) -> dict[str, Any]:
    ev = walk_forward(data, [Candidate("m", recipe)])["m"]
    e = assess(ev.p, ev.base, ev.y, ev.r, ev.accepted, RULE)
    return {"n": e.n, "shown": e.shown, "lift": e.lift_r, "lift_ci": (e.lift_lo, e.lift_hi), "skill": e.skill,
            "skill_ci": (e.skill_lo, e.skill_hi)}


def fit_seconds(recipe: Any, n: int = 20_000) -> float:
    data = synthetic(n, 0.5, 99)
    started = time.perf_counter()
    recipe.fit(data)
    return time.perf_counter() - started


def real_datasets() -> dict[str, Dataset]:
    import argparse

    from bench.data import BINANCE
    from bot.cli_ml import _replayed
    from core.ml.dataset import build

    args = argparse.Namespace(data=BINANCE, symbols=None, intervals=("15", "5"), start=None, end=None, funding=None)
    return build(asyncio.run(_replayed(args)))


def main() -> None:
    real = real_datasets()
    fit_seconds(RECIPES["default: 30 trees, depth 2"], 2_000)  # scikit-learn imported and warm before timing
    base_fit = fit_seconds(RECIPES["default: 30 trees, depth 2"])
    for name, recipe in RECIPES.items():
        found = sum(judged(synthetic(800, 0.8, s), recipe)["shown"] for s in SEEDS)
        false = sum(judged(synthetic(800, 0.0, 100 + s), recipe)["shown"] for s in SEEDS)
        took = fit_seconds(recipe)
        print(f"{name}: planted signal found {found}/{len(SEEDS)}, noise promoted {false}/{len(SEEDS)}; "
              f"fit on 20,000 rows {took:.2f} s ({took / base_fit:.1f}x the default's)")
        for strategy, data in sorted(real.items()):
            j = judged(data, recipe)
            print(f"    {strategy:<15} n={j['n']:>4}  lift {j['lift']:+.3f}R [{j['lift_ci'][0]:+.3f}, "
                  f"{j['lift_ci'][1]:+.3f}]  Brier skill {j['skill']:+.1%} [{j['skill_ci'][0]:+.1%}, "
                  f"{j['skill_ci'][1]:+.1%}]  {'EVIDENCE' if j['shown'] else 'not enough evidence'}")


if __name__ == "__main__":
    main()
