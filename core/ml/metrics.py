"""Pure metric functions of the ML filter: EV, Brier, AUC, EV lift, calibration curve, EV buckets."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

# EV buckets for reporting (in R): the filter's view of a signal, from "clearly bad" to "clearly good"
EV_EDGES: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5)


def expected_value(p: np.ndarray | float, rr: np.ndarray | float) -> np.ndarray | float:
    """EV in R of a trade that wins rr with probability p and loses 1R otherwise."""
    return p * rr - (1.0 - p)


def accepts(p: np.ndarray, rr: np.ndarray, threshold: float, min_p: float) -> np.ndarray:
    """The decision rule of the filter: EV >= threshold and p >= floor."""
    return (expected_value(p, rr) >= threshold) & (p >= min_p)


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2)) if len(y) else float("nan")


def auc(p: np.ndarray, y: np.ndarray) -> float | None:
    """Area under the ROC curve; None when only one class is present."""
    if len(np.unique(y)) < 2:
        return None
    from sklearn.metrics import roc_auc_score  # reports only: scoring never needs scikit-learn

    return float(roc_auc_score(y, p))


def expectancy(r: np.ndarray) -> float:
    return float(np.mean(r)) if len(r) else 0.0


def ev_lift(r: np.ndarray, accepted: np.ndarray) -> float:
    """Expectancy in R of the accepted signals minus that of all signals.

    A filter that accepts nothing makes no trades: its expectancy is counted as 0, so its lift is
    minus the expectancy of all signals (it helps exactly when the signals lose on average)."""
    if not len(r):
        return 0.0
    taken = r[accepted]
    return (expectancy(taken) if len(taken) else 0.0) - expectancy(r)


def calibration_curve(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Predicted vs observed win rate in equal-width probability bins (empty bins left out)."""
    out = []
    which = np.minimum((np.asarray(p) * bins).astype(int), bins - 1)
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append({"lo": b / bins, "hi": (b + 1) / bins, "n": int(mask.sum()),
                        "p_mean": round(float(p[mask].mean()), 4), "win_rate": round(float(y[mask].mean()), 4)})
    return out


def ev_buckets(ev: np.ndarray, r: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    """Realized outcome per predicted-EV bucket; `lift_r` is the bucket's expectancy minus everyone's."""
    overall = expectancy(r)
    edges = (-np.inf, *EV_EDGES, np.inf)
    out = []
    for lo, hi in itertools.pairwise(edges):
        mask = (ev >= lo) & (ev < hi)
        if not mask.any():
            continue
        out.append({"lo": None if lo == -np.inf else lo, "hi": None if hi == np.inf else hi, "n": int(mask.sum()),
                    "ev_mean": round(float(ev[mask].mean()), 4), "mean_r": round(float(r[mask].mean()), 4),
                    "win_rate": round(float(y[mask].mean()), 4), "lift_r": round(float(r[mask].mean()) - overall, 4)})
    return out
