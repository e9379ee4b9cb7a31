"""What the engine asks the ML filter, and the answer before any model exists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.phantom import Phantom
from core.signal import Signal


@dataclass(frozen=True, slots=True)
class Score:
    take: bool
    p_win: float | None  # calibrated probability of a win; None: unscored
    ev_r: float | None  # expected value in R: p * RR - (1 - p)
    model_version: int | None
    reason: str  # "unscored", "ev 0.31 >= 0.10", "ev -0.2 < 0.00", ...


UNSCORED = Score(True, None, None, None, "unscored: no model yet")


class Scorer(Protocol):
    def score(self, signal: Signal) -> Score: ...

    def observe(self, phantom: Phantom) -> None:
        """A phantom closed: an outcome to learn from."""
        ...


class NoScorer:
    """No ML filter: every signal that passes the rules is taken, flagged unscored."""

    def score(self, signal: Signal) -> Score:
        return UNSCORED

    def observe(self, phantom: Phantom) -> None:
        return None
