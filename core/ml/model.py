"""The model of one strategy: an ensemble (random forest + histogram gradient boosting; a small MLP
behind a StandardScaler optional) whose averaged probability is calibrated with isotonic regression on
a held-out time slice.

Training on a dataset ordered by exit time (core/ml/dataset.py):
- the first 75% of the rows fit the ensemble members;
- the latest 25%, minus the rows opened before the fit slice's last exit (purge: their outcome
  overlaps the fit slice in time), fit the isotonic map from the members' average to p(win);
- the calibrated p is shrunk toward the training base rate with a pseudo-count of 100 rows:
  (n_cal * p_iso + 100 * base) / (n_cal + 100). A calibration slice of a few dozen rows cannot then
  produce confident nonsense; with thousands of rows the shrinkage fades.

The defaults were chosen a priori and checked on synthetic data only (features with and without
signal; see tests/unit/test_ml.py), never on the walk-forward folds of the real replay: the MLP
overfitted small samples badly (so it is off by default), leaves of fewer than 20 rows overfitted
noise, and the isotonic map's variance on small slices cost more Brier than the signal was worth
unless shrunk.

Everything is seeded and single-threaded per member (RF n_jobs is a choice that does not change
results), so the same rows give the same model, bit for bit: replays stay reproducible.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.isotonic import IsotonicRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController

from core.ml.dataset import FEATURE_NAMES, Dataset

# One OpenMP/BLAS thread around every fit and predict: deterministic, no oversubscription next to the
# event loop, and far faster here (OpenMP's 2 threads made one boosting fit 40x slower on a 2-core box).
# The controller is built once: entering its limit costs ~10 µs (a fresh threadpool_limits, ~1 ms).
_THREADS = ThreadpoolController()

MEMBERS = ("rf", "gb", "mlp")  # known members; the default ensemble is rf + gb


@dataclass(frozen=True)
class TrainConfig:
    """The hyperparameters, fixed a priori (never tuned on the walk-forward folds)."""

    seed: int = 7
    members: tuple[str, ...] = ("rf", "gb")
    rf_trees: int = 100
    rf_max_depth: int = 6
    gb_iterations: int = 100
    gb_max_depth: int = 3
    gb_learning_rate: float = 0.05
    mlp_hidden: int = 16
    mlp_alpha: float = 1e-2
    min_leaf: int = 20  # rows per leaf, at least ...
    min_leaf_frac: float = 0.01  # ... and at least this share of the rows
    calibration_frac: float = 0.25
    shrink_rows: float = 100.0  # pseudo-count pulling p toward the base rate
    n_jobs: int = field(default=1, compare=False)  # random forest threads: results do not depend on it

    def as_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TrainConfig:
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        if "members" in known:
            known["members"] = tuple(known["members"])
        return cls(**known)


@dataclass(frozen=True)
class Recipe:
    """How a model is made from a dataset: what the walk-forward evaluates fold after fold.

    `shuffle_labels` is the negative control: a challenger trained on permuted labels has learnt
    nothing, and the gate must refuse it (tests; the report prints it as a reference)."""

    config: TrainConfig = field(default_factory=TrainConfig)
    shuffle_labels: bool = False

    def fit(self, data: Dataset) -> Ensemble:
        if self.shuffle_labels:
            rng = np.random.default_rng(self.config.seed + len(data))
            data = data.with_labels(rng.permutation(data.y))
        return train(data, self.config)


class Ensemble:
    """A trained model: members + isotonic map + shrinkage. Predicts calibrated p(win)."""

    def __init__(self, members: dict[str, Any], iso_x: np.ndarray, iso_y: np.ndarray, n_cal: int, base_rate: float,
                 meta: dict[str, Any]) -> None:
        self.members = members
        self.iso_x = np.asarray(iso_x, dtype=np.float64)
        self.iso_y = np.asarray(iso_y, dtype=np.float64)
        self.n_cal = int(n_cal)
        self.base_rate = float(base_rate)
        self.meta = meta
        self.shrink = float(meta.get("config", {}).get("shrink_rows", TrainConfig.shrink_rows))
        rf = members.get("rf")
        self._trees = [e.tree_ for e in rf.estimators_] if rf is not None else []

    # --- prediction --------------------------------------------------------------------------------
    def raw(self, X: np.ndarray) -> np.ndarray:
        """The members' average p(win), before calibration."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if not self.members:
            return np.full(len(X), self.base_rate)
        total = np.zeros(len(X))
        with _THREADS.limit(limits=1):
            for name, member in self.members.items():
                if name == "rf":
                    total += self._rf(X)
                elif name == "mlp":
                    total += self._mlp(X)
                else:
                    total += member.predict_proba(X)[:, 1]
        return total / len(self.members)

    def _rf(self, X: np.ndarray) -> np.ndarray:
        """The forest's predict_proba without its per-call thread-pool setup (3 ms for one row): the same
        sum of per-tree leaf proportions in the same order."""
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        acc = np.zeros(len(X))
        for tree in self._trees:
            v = tree.predict(X32)
            if v.ndim == 3:
                v = v[:, 0, :]
            total = v.sum(axis=1)
            acc += v[:, 1] / np.where(total == 0.0, 1.0, total)
        return acc / len(self._trees)

    def _mlp(self, X: np.ndarray) -> np.ndarray:
        """The scaler + MLP forward pass from their fitted attributes (predict_proba's input checks cost
        more than the arithmetic for one row)."""
        scaler, mlp = self.members["mlp"].named_steps["scale"], self.members["mlp"].named_steps["mlp"]
        z = (X - scaler.mean_) / scaler.scale_
        last = len(mlp.coefs_) - 1
        for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True)):
            z = z @ w + b
            if i < last:
                np.maximum(z, 0.0, out=z)  # relu, MLPClassifier's default activation
        return 1.0 / (1.0 + np.exp(-z[:, 0]))  # logistic output of a binary MLPClassifier

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        if self.n_cal == 0:
            return np.full(len(raw), self.base_rate)
        iso = np.interp(raw, self.iso_x, self.iso_y)
        return (self.n_cal * iso + self.shrink * self.base_rate) / (self.n_cal + self.shrink)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Calibrated p(win) for each row."""
        return self.calibrate(self.raw(X))

    def predict_one(self, x: np.ndarray) -> float:
        return float(self.predict(x.reshape(1, -1))[0])

    # --- facts ------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return int(self.meta.get("version", 0))

    @property
    def cutoff_ms(self) -> int:
        """Exit time of the newest outcome it was trained on: it knows nothing after this."""
        return int(self.meta.get("cutoff_ms", 0))

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_json(self.meta.get("config", {}))

    def importances(self, top: int = 10) -> list[tuple[str, float]]:
        """Impurity importances of the forest (the boosted trees and the MLP expose none)."""
        rf = self.members.get("rf")
        if rf is None:
            return []
        values = rf.feature_importances_
        order = np.argsort(-values, kind="stable")[:top]
        return [(FEATURE_NAMES[i], round(float(values[i]), 4)) for i in order]

    # --- serialization (core/ml/artifact.py): plain containers, sklearn objects and arrays only -----
    def payload(self) -> dict[str, Any]:
        return {"format": 1, "members": dict(self.members), "iso_x": self.iso_x, "iso_y": self.iso_y,
                "n_cal": self.n_cal, "base_rate": self.base_rate, "meta": self.meta}

    @classmethod
    def from_payload(cls, doc: Mapping[str, Any]) -> Ensemble:
        if doc.get("format") != 1:
            raise ValueError(f"unknown model format {doc.get('format')!r}")
        return cls(dict(doc["members"]), doc["iso_x"], doc["iso_y"], doc["n_cal"], doc["base_rate"],
                   dict(doc["meta"]))


def _split(data: Dataset, frac: float) -> tuple[Dataset, Dataset]:
    """(fit slice, calibration slice): the latest `frac` of the rows, purged of rows opened before the
    fit slice's last exit."""
    n = len(data)
    n_cal = round(frac * n) if n >= 8 else 0
    if n_cal == 0:
        return data, data.take(slice(0, 0))
    cut = n - n_cal
    fit = data.take(slice(0, cut))
    after = np.arange(cut, n)
    keep = after[data.opened_ms[cut:] >= data.exit_ms[cut - 1]]
    return fit, data.take(keep)


def _members(fit: Dataset, config: TrainConfig) -> dict[str, Any]:
    n = len(fit)
    leaf = max(config.min_leaf, int(config.min_leaf_frac * n))
    out: dict[str, Any] = {}
    for name in config.members:
        if name == "rf":
            model: Any = RandomForestClassifier(
                n_estimators=config.rf_trees, max_depth=config.rf_max_depth, min_samples_leaf=leaf,
                max_features="sqrt", random_state=config.seed, n_jobs=config.n_jobs)
        elif name == "gb":
            model = HistGradientBoostingClassifier(
                max_iter=config.gb_iterations, max_depth=config.gb_max_depth, learning_rate=config.gb_learning_rate,
                min_samples_leaf=leaf, early_stopping=False, random_state=config.seed)
        elif name == "mlp":
            model = Pipeline([("scale", StandardScaler()), ("mlp", MLPClassifier(
                hidden_layer_sizes=(config.mlp_hidden,), activation="relu", alpha=config.mlp_alpha, max_iter=300,
                early_stopping=n >= 200, random_state=config.seed))])
        else:
            raise ValueError(f"unknown ensemble member {name!r} (known: {', '.join(MEMBERS)})")
        model.fit(fit.X, fit.y)
        out[name] = model
    return out


def train(data: Dataset, config: TrainConfig | None = None) -> Ensemble:
    """Fit the ensemble and its calibration on `data` (ordered by exit time)."""
    config = config or TrainConfig()
    fit, cal = _split(data, config.calibration_frac)
    base = data.base_rate
    with _THREADS.limit(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        members = _members(fit, config) if len(np.unique(fit.y)) == 2 else {}
        model = Ensemble(members, np.array([0.0, 1.0]), np.array([base, base]), 0, base, {})
        if len(cal):
            raw = model.raw(cal.X)
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, cal.y)
            model.iso_x, model.iso_y = iso.X_thresholds_.astype(np.float64), iso.y_thresholds_.astype(np.float64)
            model.n_cal = len(cal)
    model.meta = {
        "strategy": data.strategy, "n_samples": len(data), "n_fit": len(fit), "n_cal": len(cal),
        "cutoff_ms": int(data.exit_ms[-1]) if len(data) else 0, "base_rate": round(base, 6),
        "features": list(FEATURE_NAMES), "config": config.as_json(),
    }
    model.shrink = config.shrink_rows
    return model
