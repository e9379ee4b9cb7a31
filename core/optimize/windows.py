"""Walk-forward windows: the study's period cut into consecutive in-sample and out-of-sample windows.

- rolling (default): K folds of equal length, one after the other; each fold is an in-sample window
  followed by its out-of-sample window (the last `oos_fraction` of the fold). Every stretch of the
  market — each regime the period went through — has some of both.
- anchored: the in-sample part is anchored at the period's start and covers its first (1 − oos_fraction),
  cut into K windows; the out-of-sample part is the most recent stretch, cut into K windows: the
  parameters are judged on a market that came entirely after the one they were chosen on.

The classic anchored scheme, whose in-sample window grows over the earlier out-of-sample ones, is not
offered: a study picks one parameter set on all its in-sample windows together, so an in-sample window
holding an earlier out-of-sample one would let the choice see it.

Each window is replayed on its own, from a flat book, its indicators warmed on the candles before it —
but an in-sample window is never warmed on out-of-sample candles: one that starts where an
out-of-sample window ends (rolling, fold 2 on) starts cold, its strategies waiting for their indicators
as on a fresh start. Bounds are aligned to the slow interval, so no slow candle straddles two windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.market.candle import ms_to_dt

Scheme = Literal["rolling", "anchored"]
Sample = Literal["in", "out"]
DAY_MS = 86_400_000
MIN_WINDOW_MS = DAY_MS  # a shorter window holds too few candles to say anything


class WindowError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Window:
    fold: int  # 1..K
    sample: Sample
    start_ms: int  # first candle open time in it
    end_ms: int  # exclusive
    warm_from_ms: int | None  # its warm-up history starts here (None: any candle before it)

    @property
    def label(self) -> str:
        return f"{'IS' if self.sample == 'in' else 'OOS'}{self.fold}"

    def describe(self) -> str:
        return f"{self.label} {ms_to_dt(self.start_ms):%Y-%m-%d %H:%M} → {ms_to_dt(self.end_ms):%Y-%m-%d %H:%M}"


@dataclass(frozen=True, slots=True)
class WalkForward:
    scheme: Scheme
    windows: tuple[Window, ...]  # in time order

    @property
    def in_sample(self) -> tuple[Window, ...]:
        return tuple(w for w in self.windows if w.sample == "in")

    @property
    def out_of_sample(self) -> tuple[Window, ...]:
        return tuple(w for w in self.windows if w.sample == "out")


def walk_forward(start_ms: int, end_ms: int, k: int, oos_fraction: float, scheme: Scheme, step_ms: int) -> WalkForward:
    """The windows of [start_ms, end_ms) (open times), their bounds on the `step_ms` grid (the slow interval)."""
    if k < 1:
        raise WindowError("--windows must be at least 1")
    if not 0 < oos_fraction < 1:
        raise WindowError("--oos-fraction must be between 0 and 1 (exclusive)")

    def cut(ms: float) -> int:  # to the grid, and never outside the period
        return min(max(start_ms, round(ms / step_ms) * step_ms), end_ms)

    def tiles(sample: Sample, lo: int, hi: int) -> list[tuple[Sample, int, int, int]]:
        return [(sample, i + 1, cut(lo + (hi - lo) * i / k), cut(lo + (hi - lo) * (i + 1) / k)) for i in range(k)]

    span = end_ms - start_ms
    bounds: list[tuple[Sample, int, int, int]] = []  # (sample, fold, start, end)
    if scheme == "rolling":
        for _, fold, lo, hi in tiles("in", start_ms, end_ms):
            split = cut(lo + (hi - lo) * (1 - oos_fraction))
            bounds += [("in", fold, lo, split), ("out", fold, split, hi)]
    else:
        split = cut(start_ms + span * (1 - oos_fraction))
        bounds = tiles("in", start_ms, split) + tiles("out", split, end_ms)
    windows: list[Window] = []
    last_oos_end: int | None = None
    for sample, fold, lo, hi in bounds:
        if hi - lo < MIN_WINDOW_MS:
            days = span / DAY_MS
            raise WindowError(f"{days:.1f} days cut into {k} folds with {oos_fraction:g} out of sample leaves a window "
                              f"under a day ({'IS' if sample == 'in' else 'OOS'}{fold}): fewer --windows, a longer "
                              "period or another --oos-fraction")
        windows.append(Window(fold, sample, lo, hi, last_oos_end if sample == "in" else None))
        if sample == "out":
            last_oos_end = hi
    return WalkForward(scheme, tuple(windows))
