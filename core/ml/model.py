"""The model of one strategy as the desk scores with it: boosted trees (scikit-learn's
HistGradientBoostingClassifier, fitted in core/ml/train.py) whose probability is calibrated by an isotonic
map fitted on a held-out time slice, then shrunk toward the training base rate:
(n_cal * p_iso + shrink * base) / (n_cal + shrink).

Here the trees are plain arrays: scoring a signal (~30 µs) and loading an artifact import nothing but
numpy, so a process that scores, or only might, never pays for scikit-learn. The arrays are the fitted
trees node for node (tests/unit/test_ml.py checks the probabilities against scikit-learn's own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

TREE_ARRAYS = ("feature", "threshold", "missing_left", "left", "right", "leaf", "value")


@dataclass(frozen=True, eq=False)
class Trees:
    """Boosted trees on the log-odds scale, one row per tree (nodes padded to the largest tree)."""

    feature: np.ndarray  # (trees, nodes) int64: the feature a split tests
    threshold: np.ndarray  # float64: go left when x <= threshold
    missing_left: np.ndarray  # bool: where a missing value (NaN) goes
    left: np.ndarray  # int64 child indices
    right: np.ndarray
    leaf: np.ndarray  # bool
    value: np.ndarray  # float64: a leaf's contribution to the log-odds
    baseline: float  # log-odds before the first tree
    depth: int  # levels to walk down (the deepest leaf)

    def log_odds(self, X: np.ndarray) -> np.ndarray:
        trees = np.arange(len(self.feature))
        node = np.zeros((len(X), len(trees)), dtype=np.int64)
        for _ in range(self.depth):  # every row down every tree at once, one level per step
            x = np.take_along_axis(X, self.feature[trees, node], axis=1)
            left = np.where(np.isnan(x), self.missing_left[trees, node], x <= self.threshold[trees, node])
            step = np.where(left, self.left[trees, node], self.right[trees, node])
            node = np.where(self.leaf[trees, node], node, step)
        return self.baseline + self.value[trees, node].sum(axis=1)


@dataclass(eq=False)
class Model:
    """A trained filter: calibrated p(win) of a signal from its feature vector."""

    trees: Trees | None  # None: the training rows held one class only (predicts the base rate)
    iso_x: np.ndarray
    iso_y: np.ndarray
    n_cal: int
    base_rate: float
    shrink: float
    threshold: float = 0.0  # minimum EV (R) to take a signal, chosen on the training outcomes
    meta: dict[str, Any] = field(default_factory=dict)

    # --- prediction --------------------------------------------------------------------------------
    def raw(self, X: np.ndarray) -> np.ndarray:
        """The trees' p(win), before calibration."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if self.trees is None:
            return np.full(len(X), self.base_rate)
        return 1.0 / (1.0 + np.exp(-self.trees.log_odds(X)))

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

    def importances(self) -> list[tuple[str, float]]:
        return [(name, float(value)) for name, value in self.meta.get("importances", [])]

    # --- serialization (core/ml/artifact.py): arrays and a JSON document, nothing else ---------------
    def arrays(self) -> dict[str, np.ndarray]:
        out = {"iso_x": self.iso_x, "iso_y": self.iso_y}
        if self.trees is not None:
            out.update({name: getattr(self.trees, name) for name in TREE_ARRAYS})
        return out

    def document(self) -> dict[str, Any]:
        t = self.trees
        return {"format": 2, "n_cal": self.n_cal, "base_rate": self.base_rate, "shrink": self.shrink,
                "threshold": self.threshold, "meta": self.meta,
                "trees": None if t is None else {"baseline": t.baseline, "depth": t.depth}}

    @classmethod
    def from_parts(cls, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> Model:
        """The model an artifact holds; ValueError when the parts do not make one."""
        if doc.get("format") != 2:
            raise ValueError(f"unknown model format {doc.get('format')!r} (a model of an older desk: retrain)")
        trees = None
        if doc["trees"] is not None:
            parts = {name: arrays[name] for name in TREE_ARRAYS}
            shape = parts["feature"].shape
            if len(shape) != 2 or any(a.shape != shape for a in parts.values()):
                raise ValueError("tree arrays of different shapes")
            n_nodes = shape[1]
            for name in ("left", "right", "feature"):
                if parts[name].dtype.kind != "i" or (parts[name].size and parts[name].min() < 0):
                    raise ValueError(f"tree array {name} is not a non-negative integer array")
            if parts["left"].size and max(parts["left"].max(), parts["right"].max()) >= n_nodes:
                raise ValueError("a tree node points outside its tree")
            if parts["feature"].size and parts["feature"].max() >= len(doc["meta"].get("features", [])):
                raise ValueError("a tree splits on a feature the model does not list")
            trees = Trees(parts["feature"], parts["threshold"].astype(np.float64), parts["missing_left"].astype(bool),
                          parts["left"], parts["right"], parts["leaf"].astype(bool),
                          parts["value"].astype(np.float64), float(doc["trees"]["baseline"]),
                          int(doc["trees"]["depth"]))
        return cls(trees, arrays["iso_x"].astype(np.float64), arrays["iso_y"].astype(np.float64), int(doc["n_cal"]),
                   float(doc["base_rate"]), float(doc["shrink"]), float(doc["threshold"]), dict(doc["meta"]))
