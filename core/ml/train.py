"""Fitting a model (the only scikit-learn importer of the desk, loaded where a model is trained).

On a dataset ordered by exit time (core/ml/dataset.py):
- the first 75% of the rows fit the boosted trees (HistGradientBoostingClassifier);
- the latest 25%, minus the rows opened before the fit slice's last exit (purge: their outcome
  overlaps the fit slice in time), fit the isotonic map from the trees' p to p(win);
- the calibrated p is shrunk toward the training base rate with a pseudo-count of 100 rows (a calibration
  slice of a few dozen rows cannot then produce confident nonsense; with thousands the shrinkage fades).
The fitted trees are then copied into plain arrays (core/ml/model.py Trees) that score without scikit-learn.

Seeded and on one thread: the same rows give the same model, bit for bit, so replays stay reproducible.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from threadpoolctl import ThreadpoolController

from core.ml.dataset import FEATURE_NAMES, Dataset
from core.ml.model import Model, Trees
from core.ml.recipe import TrainConfig

# One OpenMP thread around every fit: deterministic, no oversubscription beside the replay or the event
# loop, and far faster here (OpenMP's 2 threads made one boosting fit 40x slower on a 2-core box).
_THREADS = ThreadpoolController()


def split(data: Dataset, frac: float) -> tuple[Dataset, Dataset]:
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


def boosted_trees(fit: Dataset, config: TrainConfig) -> HistGradientBoostingClassifier:
    leaf = max(config.min_leaf, int(config.min_leaf_frac * len(fit)))
    return HistGradientBoostingClassifier(
        max_iter=config.iterations, max_depth=config.max_depth, learning_rate=config.learning_rate,
        max_bins=config.max_bins, min_samples_leaf=leaf, early_stopping=False, random_state=config.seed,
    ).fit(fit.X, fit.y)


def compile_trees(model: HistGradientBoostingClassifier) -> Trees:
    """The fitted trees as arrays (scikit-learn keeps them in `_predictors`, one node table per tree;
    the test against predict_proba catches a change of that layout)."""
    nodes = [tree[0].nodes for tree in model._predictors]
    if any(n["is_categorical"].any() for n in nodes):
        raise ValueError("categorical splits are not supported")
    width = max(len(n) for n in nodes)

    def column(name: str, dtype: type, fill: object) -> np.ndarray:
        out: np.ndarray = np.full((len(nodes), width), fill, dtype=dtype)
        for i, n in enumerate(nodes):
            out[i, :len(n)] = n[name]
        return out

    return Trees(column("feature_idx", np.int64, 0), column("num_threshold", np.float64, 0.0),
                 column("missing_go_to_left", np.bool_, False), column("left", np.int64, 0),
                 column("right", np.int64, 0), column("is_leaf", np.bool_, True), column("value", np.float64, 0.0),
                 float(np.ravel(model._baseline_prediction)[0]), int(max(int(n["depth"].max()) for n in nodes)))


def importances(model: HistGradientBoostingClassifier, top: int = 10) -> list[list[str | float]]:
    """Each feature's share of the split gain over all trees."""
    gain = np.zeros(len(FEATURE_NAMES))
    for tree in model._predictors:
        n = tree[0].nodes
        split_nodes = n["is_leaf"] == 0
        np.add.at(gain, n["feature_idx"][split_nodes], n["gain"][split_nodes])
    total = gain.sum()
    if total <= 0:
        return []
    order = np.argsort(-gain, kind="stable")[:top]
    return [[FEATURE_NAMES[i], round(float(gain[i] / total), 4)] for i in order if gain[i] > 0]


def train(data: Dataset, config: TrainConfig | None = None) -> Model:
    """Fit the trees and their calibration on `data` (ordered by exit time)."""
    config = config or TrainConfig()
    fit, cal = split(data, config.calibration_frac)
    base = data.base_rate
    fitted = None
    with _THREADS.limit(limits=1):
        if len(np.unique(fit.y)) == 2:
            fitted = boosted_trees(fit, config)
        model = Model(None if fitted is None else compile_trees(fitted), np.array([0.0, 1.0]), np.array([base, base]),
                      0, base, config.shrink_rows)
        if len(cal):
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(model.raw(cal.X), cal.y)
            model.iso_x, model.iso_y = iso.X_thresholds_.astype(np.float64), iso.y_thresholds_.astype(np.float64)
            model.n_cal = len(cal)
    model.meta = {
        "strategy": data.strategy, "n_samples": len(data), "n_fit": len(fit), "n_cal": len(cal),
        "cutoff_ms": int(data.exit_ms[-1]) if len(data) else 0, "base_rate": round(base, 6),
        "features": list(FEATURE_NAMES), "config": config.as_json(),
        "importances": [] if fitted is None else importances(fitted),
    }
    return model
