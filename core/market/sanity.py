"""What a sane candle is: the one rule every boundary where candles enter applies (the live Bybit feed, its
REST backfill, candle files, the `candles backfill` command, and candles read back from the store).

A candle is refused, with a typed `Refusal`, unless:
- every price and the volume are finite (turnover may be unknown: None, or NaN in a CandleSeries);
- prices are in [MIN_PRICE, MAX_PRICE], high >= max(open, close) and low <= min(open, close);
- volume (and a known turnover) is in [0, MAX_VOLUME];
- its open time lies between 1970 and the year 3000;
- it has closed: open time + interval <= now + CLOSE_TOLERANCE, where `now` is the caller's (core/ reads no
  wall clock) — or None where there is no "now" to compare with (a replay of old files).

The bounds are generous enough for any real market and tight enough that nothing downstream overflows:
- MAX_PRICE 1e9 USDT is ~10,000 times BTC's all-time high; MIN_PRICE 1e-10 is the smallest price the
  candles table (Numeric(28,10)) can hold — a smaller one would come back from the store as 0.
- MAX_VOLUME 1e17 units: a coin priced at 1e-8 trading a billion dollars within one candle — more than any
  coin trades in a week — and still under the 1e18 that Numeric(28,10) can hold. The same cap applies to
  turnover (quote currency), where it is looser still.
- CLOSE_TOLERANCE 30 s absorbs clock skew between the desk's host and the exchange and is shorter than
  the shortest interval (1 minute), so a candle still open by a whole interval cannot pass.

The rule is written once, over numpy arrays (files and stored series are checked a column at a time);
`refusal(candle, now)` applies it to one candle.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

import numpy as np

from core.market.candle import INTERVAL_MS, MAX_MS, Candle, dt_to_ms
from core.market.series import CandleSeries

MIN_PRICE = 1e-10
MAX_PRICE = 1e9
MAX_VOLUME = 1e17
CLOSE_TOLERANCE = timedelta(seconds=30)
_TOLERANCE_MS = int(CLOSE_TOLERANCE.total_seconds() * 1000)


class Refusal(Enum):
    """Why a candle was refused; the value names its counter (feed stats, logs)."""

    NOT_FINITE = "not_finite"
    PRICE_NOT_POSITIVE = "price_not_positive"
    PRICE_OUT_OF_RANGE = "price_out_of_range"
    HIGH_BELOW_LOW = "high_below_low"
    HIGH_BELOW_BODY = "high_below_body"
    LOW_ABOVE_BODY = "low_above_body"
    VOLUME_NEGATIVE = "volume_negative"
    VOLUME_TOO_LARGE = "volume_too_large"
    BAD_OPEN_TIME = "bad_open_time"
    NOT_CLOSED = "not_closed"

    @property
    def text(self) -> str:
        """The reason as a person reads it (a file's `file:line: reason`)."""
        return _TEXT[self]


_TEXT = {
    Refusal.NOT_FINITE: "a price, the volume or the turnover is NaN or infinite",
    Refusal.PRICE_NOT_POSITIVE: "prices must be positive",
    Refusal.PRICE_OUT_OF_RANGE: f"a price is outside [{MIN_PRICE:g}, {MAX_PRICE:g}]",
    Refusal.HIGH_BELOW_LOW: "high < low",
    Refusal.HIGH_BELOW_BODY: "high is below open or close",
    Refusal.LOW_ABOVE_BODY: "low is above open or close",
    Refusal.VOLUME_NEGATIVE: "volume or turnover is negative",
    Refusal.VOLUME_TOO_LARGE: f"volume or turnover is above {MAX_VOLUME:g}",
    Refusal.BAD_OPEN_TIME: "the open time is before 1970 or after the year 3000",
    Refusal.NOT_CLOSED: "the candle had not closed yet (its close time is in the future)",
}


def refusal_masks(open_ms: np.ndarray, interval: str, o: np.ndarray, h: np.ndarray, lo: np.ndarray,
                  c: np.ndarray, v: np.ndarray, turnover: np.ndarray | None,
                  now: datetime | None) -> list[tuple[Refusal, np.ndarray]]:
    """The rule over columns: (reason, rows it refuses) in order of precedence — a row refused for several
    reasons is named by the first. `open_ms` may be float (a file's raw column) or int64."""
    t = np.zeros_like(v) if turnover is None else turnover
    with np.errstate(invalid="ignore"):
        prices = (o, h, lo, c)
        masks = [
            (Refusal.NOT_FINITE, ~(np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c)
                                   & np.isfinite(v)) | np.isinf(t)),  # NaN turnover = unknown
            (Refusal.PRICE_NOT_POSITIVE, np.logical_or.reduce([p <= 0 for p in prices])),
            (Refusal.PRICE_OUT_OF_RANGE, np.logical_or.reduce([(p < MIN_PRICE) | (p > MAX_PRICE) for p in prices])),
            (Refusal.HIGH_BELOW_LOW, h < lo),
            (Refusal.HIGH_BELOW_BODY, h < np.maximum(o, c)),
            (Refusal.LOW_ABOVE_BODY, lo > np.minimum(o, c)),
            (Refusal.VOLUME_NEGATIVE, (v < 0) | (t < 0)),
            (Refusal.VOLUME_TOO_LARGE, (v > MAX_VOLUME) | (t > MAX_VOLUME)),
            (Refusal.BAD_OPEN_TIME, (open_ms < 0) | (open_ms >= MAX_MS)),
        ]
        if now is not None:
            masks.append((Refusal.NOT_CLOSED, open_ms + INTERVAL_MS[interval] > dt_to_ms(now) + _TOLERANCE_MS))
    return masks


def first_refusals(open_ms: np.ndarray, interval: str, o: np.ndarray, h: np.ndarray, lo: np.ndarray,
                   c: np.ndarray, v: np.ndarray, turnover: np.ndarray | None,
                   now: datetime | None) -> list[Refusal | None]:
    """Per row: the first reason it is refused for, or None when it is sane."""
    out: list[Refusal | None] = [None] * len(v)
    for reason, mask in refusal_masks(open_ms, interval, o, h, lo, c, v, turnover, now):
        for i in np.flatnonzero(mask).tolist():
            if out[i] is None:
                out[i] = reason
    return out


def refusal(candle: Candle, now: datetime | None) -> Refusal | None:
    """Why `candle` must not enter, or None when it is sane. `now`: see the module docstring."""
    col = np.array  # one-element columns: the same rule as for whole files, not a second copy of it
    turnover = None if candle.turnover is None else col([candle.turnover], dtype=np.float64)
    o, h, lo, c, v = (col([x], dtype=np.float64) for x in (candle.open, candle.high, candle.low, candle.close,
                                                          candle.volume))
    [reason] = first_refusals(col([candle.open_ms], dtype=np.int64), candle.interval, o, h, lo, c, v, turnover, now)
    return reason


def closed_by(open_time: datetime, interval: str, now: datetime) -> bool:
    """Had the candle opening at `open_time` closed by `now` (within the tolerance)?"""
    return dt_to_ms(open_time) + INTERVAL_MS[interval] <= dt_to_ms(now) + _TOLERANCE_MS


def sane_series(s: CandleSeries, now: datetime | None) -> tuple[CandleSeries, dict[Refusal, int]]:
    """The sane rows of a series, and how many rows were refused per reason."""
    columns = (s.open_ms, s.interval, s.open, s.high, s.low, s.close, s.volume, s.turnover, now)
    if not any(mask.any() for _, mask in refusal_masks(*columns)):
        return s, {}  # the usual case: no per-row work
    reasons = first_refusals(*columns)
    refused: dict[Refusal, int] = {}
    for r in reasons:
        if r is not None:
            refused[r] = refused.get(r, 0) + 1
    return s.take(np.array([r is None for r in reasons], dtype=bool)), refused


def describe(candle: Candle, reason: Refusal) -> str:
    """One line for a log: which candle, why, and the values."""
    return (f"{candle.symbol} {candle.interval} {candle.open_time:%Y-%m-%d %H:%M} UTC: {reason.text} "
            f"(o={candle.open:.6g} h={candle.high:.6g} l={candle.low:.6g} c={candle.close:.6g} v={candle.volume:.6g})")

