"""Funding of perpetual positions: the settlements per symbol, and the one formula every path uses.

At each settlement time t a position held across t pays (long, rate > 0) or receives `size × mark × rate`
— Bybit's rule, and the arithmetic the paper venue, the phantom book and the fake exchange share. A
position is held across t when it was entered before t and exits after it: an entry filled at t itself
(a candle's open) or an exit at t pays nothing. Rates come from data (files beside the candles, Bybit's
public history stored by the desk), never from the wall clock: the same candles and rates give the same
ledger.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from decimal import Decimal


def funding_fee(qty: Decimal, mark: Decimal, rate: Decimal, side: str) -> Decimal:
    """What the account pays at one settlement (negative: receives). Longs pay a positive rate."""
    return qty * mark * rate * (1 if side == "long" else -1)


def funding_r(rate: float, mark: float, risk_per_unit: float, direction: int) -> float:
    """The same settlement in R of a position risking `risk_per_unit` per unit: what a phantom earns."""
    return -direction * rate * mark / risk_per_unit


@dataclass
class FundingSchedule:
    """Settlement times (UTC ms, increasing) and rates per symbol. A symbol without a series is unknown,
    never "zero": `covers` tells the report which symbols had their funding modelled."""

    times: dict[str, list[int]] = field(default_factory=dict)
    rates: dict[str, list[Decimal]] = field(default_factory=dict)

    def add(self, symbol: str, time_ms: int, rate: Decimal) -> bool:
        """One settlement (in time order; an older or repeated one is ignored). True when new."""
        times = self.times.setdefault(symbol, [])
        if times and time_ms <= times[-1]:
            return False
        times.append(time_ms)
        self.rates.setdefault(symbol, []).append(rate)
        return True

    def covers(self, symbol: str) -> bool:
        return bool(self.times.get(symbol))

    def between(self, symbol: str, after_ms: int, until_ms: int) -> list[tuple[int, Decimal]]:
        """Settlements with after_ms < t <= until_ms, oldest first."""
        times = self.times.get(symbol)
        if not times or until_ms <= after_ms:
            return []
        lo, hi = bisect_right(times, after_ms), bisect_right(times, until_ms)
        rates = self.rates[symbol]
        return [(times[i], rates[i]) for i in range(lo, hi)]

    def first_after(self, symbol: str, after_ms: int) -> int | None:
        times = self.times.get(symbol)
        if not times:
            return None
        i = bisect_left(times, after_ms + 1)
        return times[i] if i < len(times) else None
