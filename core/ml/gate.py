"""Champion/challenger: a new model replaces the one in force only if it is at least as good, on data
it has not seen, on both Brier score and EV lift.

Walk-forward (expanding window): the latest `eval_frac` of a strategy's outcomes (ordered by exit
time) is cut into `folds` consecutive test slices. For the slice starting at row b, "as of" time
T = exit time of row b-1:
- training rows: every outcome that exited at or before T (rows 0..b-1);
- test rows: the slice's outcomes opened at or after T (those opened earlier overlap the training
  rows in time and are purged).
Each candidate predicts each slice as it would have stood at T:
- the challenger: its recipe fitted on the training rows;
- the champion: the trained champion itself when it was trained before T (cutoff <= T), otherwise
  its recipe fitted on the training rows (the champion "as of T"; with the same recipe this is the
  challenger's own fold model, so the comparison concentrates on the folds where they differ);
- no model (before the first promotion): the training rows' base rate, taking every signal (lift 0).
Brier score and EV lift are computed on all test slices pooled (and reported per slice).
EV lift = expectancy (R) of the signals a candidate accepts minus the expectancy of all signals.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.ml import metrics
from core.ml.artifact import dumps
from core.ml.dataset import Dataset
from core.ml.model import Ensemble, Recipe

TIE = 1e-12  # "at least as good": equal figures pass


@dataclass(frozen=True)
class WalkForward:
    folds: int = 5
    eval_frac: float = 0.5  # the latest half of the outcomes is tested, slice after slice
    min_train: int = 10  # a slice needs at least this many earlier outcomes to train on

    def splits(self, data: Dataset) -> list[Fold]:
        n = len(data)
        start = n - round(self.eval_frac * n)
        bounds = [start + round(k * (n - start) / self.folds) for k in range(self.folds + 1)]
        out = []
        for a, b in itertools.pairwise(bounds):
            if a < self.min_train or b <= a:
                continue
            as_of = int(data.exit_ms[a - 1])
            test = np.arange(a, b)[data.opened_ms[a:b] >= as_of]
            if len(test):
                out.append(Fold(a, test, as_of))
        return out


@dataclass(frozen=True)
class Fold:
    train_end: int  # rows [0, train_end) are the training rows
    test: np.ndarray  # row indices of the test slice (purged)
    as_of_ms: int


@dataclass(frozen=True)
class Candidate:
    name: str
    recipe: Recipe | None = None  # None and no model: "no model" (base rate, takes every signal)
    model: Ensemble | None = None  # a trained model, used on the slices after its cutoff

    @property
    def is_base(self) -> bool:
        return self.recipe is None and self.model is None


@dataclass
class Evaluation:
    """A candidate's pooled out-of-sample predictions and figures."""

    name: str
    p: np.ndarray
    y: np.ndarray
    r: np.ndarray
    rr: np.ndarray
    accepted: np.ndarray
    folds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def brier(self) -> float:
        return metrics.brier(self.p, self.y)

    @property
    def lift(self) -> float:
        return metrics.ev_lift(self.r, self.accepted)

    def summary(self) -> dict[str, Any]:
        taken = self.r[self.accepted]
        auc = metrics.auc(self.p, self.y) if self.n else None
        return {
            "n": self.n, "brier": _round(self.brier), "auc": None if auc is None else _round(auc),
            "lift_r": _round(self.lift), "accepted": int(self.accepted.sum()),
            "expectancy_all_r": _round(metrics.expectancy(self.r)),
            "expectancy_accepted_r": _round(metrics.expectancy(taken)) if len(taken) else None,
            "win_rate_accepted": _round(float(self.y[self.accepted].mean())) if len(taken) else None,
        }

    def charts(self) -> dict[str, Any]:
        ev = metrics.expected_value(self.p, self.rr)
        return {"calibration": metrics.calibration_curve(self.p, self.y),
                "ev_buckets": metrics.ev_buckets(np.asarray(ev), self.r, self.y)}


def _round(x: float, places: int = 6) -> float:
    return round(float(x), places)


def walk_forward(data: Dataset, candidates: list[Candidate], *, config: WalkForward | None = None,
                 threshold: float = 0.0, min_p: float = 0.0) -> dict[str, Evaluation]:
    config = config or WalkForward()
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {c.name: [] for c in candidates}
    folds: dict[str, list[dict[str, Any]]] = {c.name: [] for c in candidates}
    tests: list[np.ndarray] = []
    for fold in config.splits(data):
        train = data.take(slice(0, fold.train_end))
        test = data.take(fold.test)
        tests.append(fold.test)
        fitted: dict[Recipe, np.ndarray] = {}  # one fit per distinct recipe and slice
        for c in candidates:
            if c.is_base:
                p = np.full(len(test), train.base_rate)
                acc = np.ones(len(test), dtype=bool)
            else:
                if c.model is not None and c.model.cutoff_ms <= fold.as_of_ms:
                    p = c.model.predict(test.X)
                else:
                    recipe = c.recipe or Recipe(c.model.config)  # type: ignore[union-attr]
                    if recipe not in fitted:
                        fitted[recipe] = recipe.fit(train).predict(test.X)
                    p = fitted[recipe]
                acc = metrics.accepts(p, test.rr, threshold, min_p)
            parts[c.name].append((p, acc))
            folds[c.name].append({"as_of_ms": fold.as_of_ms, "train": fold.train_end, "test": len(test),
                                  "brier": _round(metrics.brier(p, test.y)),
                                  "lift_r": _round(metrics.ev_lift(test.r, acc)), "accepted": int(acc.sum())})
    index = np.concatenate(tests) if tests else np.empty(0, dtype=np.int64)
    out = {}
    for c in candidates:
        p = np.concatenate([x for x, _ in parts[c.name]]) if tests else np.empty(0)
        acc = np.concatenate([a for _, a in parts[c.name]]) if tests else np.empty(0, dtype=bool)
        out[c.name] = Evaluation(c.name, p, data.y[index].astype(np.float64), data.r[index], data.rr[index], acc,
                                 folds[c.name])
    return out


def decide(challenger: Evaluation, champion: Evaluation) -> tuple[bool, str]:
    """Promote when the challenger is at least as good on Brier score AND on EV lift."""
    if challenger.n == 0:
        return False, "no out-of-sample outcomes to judge it on"
    cb, pb, cl, pl = challenger.brier, champion.brier, challenger.lift, champion.lift
    worse = []
    if cb > pb + TIE:
        worse.append(f"Brier {cb:.4f} worse than the champion's {pb:.4f}")
    if cl < pl - TIE:
        worse.append(f"EV lift {cl:+.3f}R below the champion's {pl:+.3f}R")
    if worse:
        return False, "; ".join(worse)
    return True, f"Brier {cb:.4f} <= {pb:.4f} and EV lift {cl:+.3f}R >= {pl:+.3f}R"


@dataclass
class RetrainResult:
    strategy: str
    version: int
    model: Ensemble
    promoted: bool
    report: dict[str, Any]
    artifact: bytes  # the skops bytes of `model` (serialized where it was trained)


def retrain(data: Dataset, *, version: int, recipe: Recipe | None = None, champion: Ensemble | None = None,
            champion_version: int | None = None, walk: WalkForward | None = None, threshold: float = 0.0,
            min_p: float = 0.0) -> RetrainResult:
    """Train a challenger on every outcome in `data` and judge it against the champion. Pure and
    deterministic: run inline (replay) or in a worker process (live)."""
    recipe = recipe or Recipe()
    walk = walk or WalkForward()
    model = recipe.fit(data)
    model.meta["version"] = version
    champ = Candidate("champion", None if champion is None else Recipe(champion.config), champion)
    candidates = [Candidate("challenger", recipe), champ]
    if champion is not None:
        candidates.append(Candidate("base"))
    evals = walk_forward(data, candidates, config=walk, threshold=threshold, min_p=min_p)
    challenger, incumbent = evals["challenger"], evals["champion"]
    base = evals.get("base", incumbent)
    promoted, why = decide(challenger, incumbent)
    report = {
        "strategy": data.strategy, "version": version, "n_samples": len(data), "cutoff_ms": model.cutoff_ms,
        "promoted": promoted, "why": why, "threshold": threshold, "min_p": min_p,
        "challenger": challenger.summary(), "champion": {"version": champion_version, **incumbent.summary()},
        "base_rate": {"p": _round(data.base_rate), "brier": _round(base.brier) if base.n else None},
        "folds": [{"as_of_ms": c["as_of_ms"], "train": c["train"], "test": c["test"],
                   "challenger": {k: c[k] for k in ("brier", "lift_r", "accepted")},
                   "champion": {k: p[k] for k in ("brier", "lift_r", "accepted")}}
                  for c, p in zip(challenger.folds, incumbent.folds, strict=True)],
        **challenger.charts(),
        "importances": [[name, value] for name, value in model.importances()],
        "calibration_rows": model.n_cal,
    }
    return RetrainResult(data.strategy, version, model, promoted, report, dumps(model))
