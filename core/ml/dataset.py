"""Learning data: one row per closed phantom (taken, rejected or blocked alike), time-ordered.

Labels: 1 when the phantom won (take-profit before stop-loss), 0 when it lost (stop-loss first).
A timeout is labelled by the sign of its realized R (R > 0 → 1, otherwise 0): it was closed at the
timeout candle's close, so a positive R is money the signal made, a zero or negative one is not.
Gap exits are left out: what happened inside a data gap is unknown (core/phantom.py).

Rows are ordered by (exit time, id): a row's label is known from its exit time on, so a model
trained "as of" time T may use exactly the rows that exited at or before T. The features were computed
when the signal was emitted (opened_at), from candles closed then (core/strategies/features.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.market.candle import INTERVAL_MS
from core.phantom import Phantom
from core.strategies.features import FEATURES

# A candle's place in the replay's merge order, (close ms, interval ms, symbol): core/market/replay.sort_key
Key = tuple[int, int, str]

FEATURE_NAMES: tuple[str, ...] = tuple(FEATURES)
N_FEATURES = len(FEATURE_NAMES)
_DEFAULTS = {"strategy_win_rate": 0.5}  # the features module's own prior for a missing value


def feature_vector(features: Mapping[str, float]) -> np.ndarray:
    """The features of one signal in FEATURE_NAMES order (missing: the features module's defaults)."""
    return np.fromiter((float(features.get(k, _DEFAULTS.get(k, 0.0))) for k in FEATURE_NAMES), dtype=np.float64,
                       count=N_FEATURES)


def label(p: Phantom) -> int | None:
    """1 win, 0 loss; None when the phantom teaches nothing (still active, or closed by a data gap)."""
    if p.status != "closed" or p.exit_reason == "gap" or p.realized_r is None or p.exit_time is None:
        return None
    if p.outcome == "win":
        return 1
    if p.outcome == "loss":
        return 0
    return 1 if p.realized_r > 0 else 0  # timeout: by the sign of its R


def _ms(p: Phantom, which: str) -> int:
    t = p.opened_at if which == "open" else p.exit_time
    assert t is not None
    return int(t.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One closed phantom as the filter learns from it."""

    id: str
    strategy: str
    side: str
    opened_ms: int
    exit_ms: int
    x: np.ndarray
    y: int
    r: float  # realized R
    rr: float  # reward/risk at the signal
    action: str  # EXECUTED / REJECTED / BLOCKED
    ml_score: float | None  # p(win) of the model in force at the signal (None: unscored)
    seen: Key  # the candle that closed it: the filter learnt of it then

    @property
    def key(self) -> tuple[int, str]:
        return self.exit_ms, self.id


def closing_candle(p: Phantom) -> Key:
    """The candle that closed a phantom: the `candles_seen`-th after its signal's (gaps close phantoms, so
    those candles are contiguous); the same from a live phantom and from its database row."""
    step = INTERVAL_MS[p.interval]
    return _ms(p, "open") + p.candles_seen * step, step, p.symbol


def outcome_of(p: Phantom) -> Outcome | None:
    y = label(p)
    if y is None:
        return None
    rr = float(p.features.get("reward_risk", p.rr)) if p.features else p.rr
    return Outcome(p.id, p.strategy, p.side, _ms(p, "open"), _ms(p, "exit"), feature_vector(p.features), y,
                   float(p.realized_r or 0.0), rr, p.action, p.ml_score, closing_candle(p))


@dataclass(frozen=True, eq=False)
class Dataset:
    """Column arrays of one strategy's outcomes, ordered by (exit time, id)."""

    strategy: str
    ids: tuple[str, ...]
    X: np.ndarray  # (n, N_FEATURES) float64
    y: np.ndarray  # (n,) int8
    r: np.ndarray  # realized R
    rr: np.ndarray  # reward/risk
    side: np.ndarray  # +1 long, -1 short
    opened_ms: np.ndarray  # int64
    exit_ms: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def base_rate(self) -> float:
        return float(self.y.mean()) if len(self.y) else 0.5

    def take(self, index: np.ndarray | slice) -> Dataset:
        ids = np.asarray(self.ids, dtype=object)[index]
        return Dataset(self.strategy, tuple(ids.tolist()), self.X[index], self.y[index], self.r[index],
                       self.rr[index], self.side[index], self.opened_ms[index], self.exit_ms[index])

    def with_labels(self, y: np.ndarray) -> Dataset:
        return Dataset(self.strategy, self.ids, self.X, y.astype(np.int8), self.r, self.rr, self.side,
                       self.opened_ms, self.exit_ms)

    @classmethod
    def from_outcomes(cls, strategy: str, outcomes: Sequence[Outcome]) -> Dataset:
        rows = sorted(outcomes, key=lambda o: o.key)
        n = len(rows)
        X = np.vstack([o.x for o in rows]) if n else np.empty((0, N_FEATURES))
        return cls(strategy, tuple(o.id for o in rows), X, np.fromiter((o.y for o in rows), np.int8, n),
                   np.fromiter((o.r for o in rows), np.float64, n), np.fromiter((o.rr for o in rows), np.float64, n),
                   np.fromiter((1 if o.side == "long" else -1 for o in rows), np.int8, n),
                   np.fromiter((o.opened_ms for o in rows), np.int64, n),
                   np.fromiter((o.exit_ms for o in rows), np.int64, n))


def build(phantoms: Iterable[Phantom]) -> dict[str, Dataset]:
    """One dataset per strategy from any mix of phantoms (active and gap-closed ones are left out)."""
    by: dict[str, list[Outcome]] = {}
    for p in phantoms:
        o = outcome_of(p)
        if o is not None:
            by.setdefault(o.strategy, []).append(o)
    return {s: Dataset.from_outcomes(s, rows) for s, rows in sorted(by.items())}
