"""Is a filter's out-of-sample advantage more than noise?

The walk-forward (core/ml/gate.py) gives, for every test outcome in time order, the filter's p(win), the
base rate it competes with (the training rows' win rate), the label, the realized R and whether the filter
took the signal. Two figures say what the filter is worth:
- EV lift: expectancy (R) of the signals it takes minus that of all signals (taking everything: exactly 0);
- Brier skill: 1 - Brier(filter) / Brier(base rate) (> 0: its probabilities beat the base rate).
Trade outcomes are serially correlated (one regime, several correlated symbols), so the interval of each
comes from a moving-block bootstrap: blocks of consecutive outcomes (ceil(sqrt(n)) long), resampled with
replacement, seeded. The filter has evidence when there are enough outcomes and the lower bound of BOTH
intervals is above zero; otherwise "not enough evidence yet", with the figures.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from core.ml.metrics import ev_lift


@dataclass(frozen=True)
class EvidenceRule:
    min_outcomes: int = 100  # out-of-sample outcomes before any verdict
    confidence: float = 0.95  # one-sided: the lower bound is the (1 - confidence) bootstrap quantile
    rounds: int = 1000
    seed: int = 0
    always: bool = False  # research and tests (`replay --ml-gate always`): every trained model takes effect

    def block(self, n: int) -> int:
        return max(1, math.ceil(math.sqrt(n)))


@dataclass(frozen=True)
class Evidence:
    """The figures a promotion or a refusal rests on (kept in the registry's metrics JSON)."""

    n: int  # out-of-sample outcomes
    accepted: int  # of which the filter took
    lift_r: float
    lift_lo: float
    lift_hi: float
    skill: float  # Brier skill against the base rate
    skill_lo: float
    skill_hi: float
    confidence: float
    min_outcomes: int
    block: int
    rounds: int

    @property
    def enough(self) -> bool:
        return self.n >= self.min_outcomes

    @property
    def shown(self) -> bool:
        """Enough outcomes, and both lower bounds above zero."""
        return self.enough and self.lift_lo > 0 and self.skill_lo > 0

    def as_json(self) -> dict[str, Any]:
        """Plain JSON (no NaN: PostgreSQL's JSON refuses it; a bound not computed is null)."""
        return {k: (None if math.isnan(v) else round(v, 6)) if isinstance(v, float) else v
                for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Evidence:
        fields: dict[str, Any] = {k: float("nan") if doc[k] is None else doc[k] for k in cls.__dataclass_fields__}
        return cls(**fields)

    def text(self) -> str:
        if not self.enough:
            return f"{self.n} of {self.min_outcomes} out-of-sample outcomes"
        pct = round(self.confidence * 100)
        return (f"EV lift {self.lift_r:+.3f}R [{self.lift_lo:+.3f}, {self.lift_hi:+.3f}], Brier skill "
                f"{self.skill:+.1%} [{self.skill_lo:+.1%}, {self.skill_hi:+.1%}] ({pct}% bounds, "
                f"{self.n} out-of-sample outcomes, {self.accepted} taken)")


def insufficient(n: int, rule: EvidenceRule) -> Evidence:
    """Too few out-of-sample outcomes to judge: nothing was fitted."""
    nan = float("nan")
    return Evidence(n, 0, 0.0, nan, nan, 0.0, nan, nan, rule.confidence, rule.min_outcomes, rule.block(n), 0)


def block_indices(n: int, rule: EvidenceRule) -> np.ndarray:
    """(rounds, n) row indices: each row a resample made of whole blocks of consecutive outcomes."""
    size = min(rule.block(n), n)
    k = math.ceil(n / size)
    starts = np.random.default_rng(rule.seed).integers(0, n - size + 1, size=(rule.rounds, k))
    return (starts[:, :, None] + np.arange(size)).reshape(rule.rounds, -1)[:, :n]


def _lift(r: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """ev_lift of every resample row (nothing taken: expectancy 0, as metrics.ev_lift counts it)."""
    n_taken = taken.sum(axis=1)
    mean_taken = np.where(n_taken > 0, (r * taken).sum(axis=1) / np.maximum(n_taken, 1), 0.0)
    return mean_taken - r.mean(axis=1)


def _skill(p: np.ndarray, base: np.ndarray, y: np.ndarray) -> np.ndarray:
    model = ((p - y) ** 2).mean(axis=-1)
    ref = ((base - y) ** 2).mean(axis=-1)
    return 1.0 - model / np.where(ref > 0, ref, 1.0)


def assess(p: np.ndarray, base: np.ndarray, y: np.ndarray, r: np.ndarray, taken: np.ndarray,
           rule: EvidenceRule) -> Evidence:
    """The evidence of a filter's predictions `p` (taking `taken`) against the base rate `base`, over
    outcomes `y`/`r` in time order."""
    n = len(y)
    if n < rule.min_outcomes or n == 0:
        return insufficient(n, rule)
    y = y.astype(np.float64)
    idx = block_indices(n, rule)
    q = (1.0 - rule.confidence, rule.confidence)
    lifts = np.quantile(_lift(r[idx], taken[idx]), q)
    skills = np.quantile(_skill(p[idx], base[idx], y[idx]), q)
    return Evidence(n, int(taken.sum()), float(ev_lift(r, taken)), float(lifts[0]), float(lifts[1]),
                    float(_skill(p, base, y)), float(skills[0]), float(skills[1]), rule.confidence,
                    rule.min_outcomes, min(rule.block(n), n), rule.rounds)
