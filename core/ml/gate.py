"""Champion/challenger with evidence: a model takes effect only when its advantage on data it has not seen
is unlikely to be noise.

Walk-forward (expanding window): the latest `eval_frac` of a strategy's outcomes (ordered by exit
time) is cut into `folds` consecutive test slices. For the slice starting at row b, "as of" time
T = exit time of row b-1:
- training rows: every outcome that exited at or before T (rows 0..b-1), at least `min_train` of them;
- test rows: the slice's outcomes opened at or after T (those opened earlier overlap the training
  rows in time and are purged).
Each candidate predicts each slice as it would have stood at T:
- the challenger: its recipe fitted on the training rows;
- the champion: the trained champion itself when it was trained before T (cutoff <= T), otherwise
  its recipe fitted on the training rows (with the same recipe, the challenger's own fold model);
- the base rate: the training rows' win rate, taking every signal (lift exactly 0): "no filter".
A fitted candidate takes a signal when EV >= its threshold and p >= min_p. The threshold is chosen on
training data only: for a slice, on the out-of-sample predictions of the slices before it (outcomes that
exited before T), as the step above the operator's floor that banked the most R; a trained model's, on
every slice of its walk-forward.

The decision (core/ml/evidence.py): the challenger must have at least `min_outcomes` test outcomes and
lower confidence bounds above zero on both its EV lift and its Brier skill against the base rate; with
a champion in force it must also be at least as good as the champion on both, over the same slices.
Every promotion and refusal keeps the figures it rested on (the report: the registry's metrics JSON).
Only a promoted challenger (or, for a desk that may ask its operator, a refused one) is fitted on all the
outcomes and serialized.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.ml import metrics
from core.ml.artifact import dumps
from core.ml.dataset import Dataset
from core.ml.evidence import Evidence, EvidenceRule, assess, insufficient
from core.ml.model import Model
from core.ml.recipe import Recipe, TrainConfig

TIE = 1e-12  # "at least as good as the champion": equal figures pass
THRESHOLD_STEPS = (0.0, 0.05, 0.1, 0.2, 0.3)  # R above the operator's floor
MIN_CHOICE_ROWS = 50  # out-of-sample predictions needed to choose a threshold (else: the floor)


@dataclass(frozen=True)
class WalkForward:
    folds: int = 5
    eval_frac: float = 0.5  # the latest half of the outcomes is tested, slice after slice
    min_train: int = 100  # a slice needs at least this many earlier outcomes to train on

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
    recipe: Recipe | None = None  # None and no model: the base rate (takes every signal)
    model: Model | None = None  # a trained model, used on the slices after its cutoff

    @property
    def is_base(self) -> bool:
        return self.recipe is None and self.model is None


def choose_threshold(p: np.ndarray, rr: np.ndarray, r: np.ndarray, floor: float, min_p: float) -> float:
    """The EV threshold (floor + a step) whose accepted signals banked the most R; ties: the lowest."""
    if len(r) < MIN_CHOICE_ROWS:
        return floor
    banked = [float(r[metrics.accepts(p, rr, floor + s, min_p)].sum()) for s in THRESHOLD_STEPS]
    return floor + THRESHOLD_STEPS[int(np.argmax(banked))]


@dataclass
class Evaluation:
    """A candidate's pooled out-of-sample predictions (in time order) and figures."""

    name: str
    p: np.ndarray
    base: np.ndarray  # the base rate each row competed with (its slice's training win rate)
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
            "n": self.n, "brier": _round(self.brier) if self.n else None, "auc": None if auc is None else _round(auc),
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
                 threshold: float = 0.0, min_p: float = 0.0, folds: list[Fold] | None = None) -> dict[str, Evaluation]:
    """Every candidate's out-of-sample predictions, slice after slice (the module docstring says how)."""
    config = config or WalkForward()
    folds = config.splits(data) if folds is None else folds
    index = np.concatenate([f.test for f in folds]) if folds else np.empty(0, dtype=np.int64)
    y, r, rr = data.y[index].astype(np.float64), data.r[index], data.rr[index]
    base = np.concatenate([np.full(len(f.test), data.y[:f.train_end].mean()) for f in folds]) if folds else np.empty(0)
    fitted: dict[tuple[Recipe, int], np.ndarray] = {}  # one fit per distinct recipe and slice
    out = {}
    for c in candidates:
        p, acc, rows = np.empty(len(index)), np.ones(len(index), dtype=bool), []
        at = 0
        for k, fold in enumerate(folds):
            s = slice(at, at + len(fold.test))
            at += len(fold.test)
            if c.is_base:
                p[s] = base[s]
                cut = None
            else:
                if c.model is not None and c.model.cutoff_ms <= fold.as_of_ms:
                    p[s], cut = c.model.predict(data.X[fold.test]), c.model.threshold
                else:
                    recipe = c.recipe or Recipe(TrainConfig.from_json(c.model.meta.get("config", {})))  # type: ignore[union-attr]
                    if (recipe, k) not in fitted:
                        fitted[(recipe, k)] = recipe.fit(data.take(slice(0, fold.train_end))).predict(data.X[fold.test])
                    p[s] = fitted[(recipe, k)]
                    cut = choose_threshold(p[:s.start], rr[:s.start], r[:s.start], threshold, min_p)
                acc[s] = metrics.accepts(p[s], rr[s], cut, min_p)
            rows.append({"as_of_ms": fold.as_of_ms, "train": fold.train_end, "test": len(fold.test),
                         "brier": _round(metrics.brier(p[s], y[s])), "lift_r": _round(metrics.ev_lift(r[s], acc[s])),
                         "accepted": int(acc[s].sum()), "threshold": cut})
        out[c.name] = Evaluation(c.name, p, base, y, r, rr, acc, rows)
    return out


def decide(challenger: Evaluation, champion: Evaluation | None, rule: EvidenceRule) -> tuple[bool, str, Evidence]:
    """Promote when the evidence says the challenger's advantage is not noise, and it is at least as good as
    the champion in force (when there is one) on Brier score and EV lift."""
    ev = assess(challenger.p, challenger.base, challenger.y, challenger.r, challenger.accepted, rule)
    if rule.always:
        return True, f"promoted without evidence (gate 'always'): {ev.text()}", ev
    if not ev.shown:
        return False, f"not enough evidence yet: {ev.text()}", ev
    if champion is not None:
        cb, pb, cl, pl = challenger.brier, champion.brier, challenger.lift, champion.lift
        worse = []
        if cb > pb + TIE:
            worse.append(f"Brier {cb:.4f} worse than the champion's {pb:.4f}")
        if cl < pl - TIE:
            worse.append(f"EV lift {cl:+.3f}R below the champion's {pl:+.3f}R")
        if worse:
            return False, f"evidence ({ev.text()}), but {'; '.join(worse)}", ev
    return True, f"evidence: {ev.text()}", ev


@dataclass
class RetrainResult:
    strategy: str
    version: int
    model: Model | None  # fitted on every outcome: when promoted, or refused and kept for the operator
    promoted: bool
    report: dict[str, Any]
    artifact: bytes | None  # the serialized `model`


def fits_anything(data: Dataset, walk: WalkForward, rule: EvidenceRule) -> bool:
    """Whether a training on `data` fits a model: else it is an instant "not enough evidence yet", cheap enough to
    run anywhere (no scikit-learn)."""
    return _judged(sum(len(f.test) for f in walk.splits(data)), rule)


def _judged(n_test: int, rule: EvidenceRule) -> bool:
    return n_test >= rule.min_outcomes or rule.always


def retrain(data: Dataset, *, version: int, recipe: Recipe | None = None, champion: Model | None = None,
            champion_version: int | None = None, walk: WalkForward | None = None, threshold: float = 0.0,
            min_p: float = 0.0, rule: EvidenceRule | None = None, keep_refused: bool = False) -> RetrainResult:
    """Judge a challenger made by `recipe` from every outcome in `data` against the champion (or no filter).
    Pure and deterministic: run inline, beside a replay, or in the live desk's worker process.
    `keep_refused`: fit and serialize a refused challenger too (an operator may promote it anyway)."""
    recipe = recipe or Recipe()
    walk = walk or WalkForward()
    rule = rule or EvidenceRule()
    folds = walk.splits(data)
    n_test = sum(len(f.test) for f in folds)
    report: dict[str, Any] = {
        "strategy": data.strategy, "version": version, "n_samples": len(data),
        "cutoff_ms": int(data.exit_ms[-1]) if len(data) else 0, "threshold_floor": threshold, "min_p": min_p,
        "gate": "always" if rule.always else "evidence", "recipe": recipe.config.as_json(),
        "champion": {"version": champion_version}, "base_rate": {"p": _round(data.base_rate), "brier": None},
    }
    if not _judged(n_test, rule):  # nothing to judge on: no fit at all
        ev = insufficient(n_test, rule)
        report.update(promoted=False, why=f"not enough evidence yet: {ev.text()}", evidence=ev.as_json(),
                      threshold=threshold, challenger={"n": n_test}, folds=[], importances=[])
        return RetrainResult(data.strategy, version, None, False, report, None)
    champ = None if champion is None else Candidate("champion", None, champion)
    candidates = [Candidate("challenger", recipe), Candidate("base"), *([champ] if champ else [])]
    evals = walk_forward(data, candidates, config=walk, threshold=threshold, min_p=min_p, folds=folds)
    challenger, base = evals["challenger"], evals["base"]
    incumbent = evals.get("champion")
    promoted, why, ev = decide(challenger, incumbent, rule)
    model = artifact = None
    chosen = choose_threshold(challenger.p, challenger.rr, challenger.r, threshold, min_p)
    if promoted or keep_refused:
        model = recipe.fit(data)
        model.threshold = chosen
        model.meta["version"] = version
        artifact = dumps(model)
    report.update(
        promoted=promoted, why=why, evidence=ev.as_json(), threshold=chosen, challenger=challenger.summary(),
        champion={"version": champion_version, **(incumbent.summary() if incumbent else {})},
        base_rate={"p": _round(data.base_rate), "brier": _round(base.brier) if base.n else None},
        folds=[{"as_of_ms": c["as_of_ms"], "train": c["train"], "test": c["test"], "base_brier": b["brier"],
                "challenger": {k: c[k] for k in ("brier", "lift_r", "accepted", "threshold")},
                **({"champion": {k: i[k] for k in ("brier", "lift_r", "accepted")}} if i else {})}
               for c, b, i in zip(challenger.folds, base.folds, incumbent.folds if incumbent else
                                  itertools.repeat(None), strict=False)],
        **challenger.charts(),
        importances=model.meta["importances"] if model is not None else [],
        calibration_rows=model.n_cal if model is not None else None,
    )
    return RetrainResult(data.strategy, version, model, promoted, report, artifact)
