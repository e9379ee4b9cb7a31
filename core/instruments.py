"""Instrument rules (tick, quantity step, minimums) and Decimal rounding to them.

Live trading fills this from Bybit's instruments-info; replay and paper trading use the table below
(Bybit's linear values at the time of writing) or, for an unknown symbol, a tick of five
significant digits at the first price seen — fixed from then on, so a replay stays deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal


@dataclass(frozen=True)
class Instrument:
    symbol: str
    tick: Decimal
    qty_step: Decimal
    min_qty: Decimal
    min_notional: Decimal = Decimal(5)

    def price(self, value: float | Decimal, mode: str = ROUND_HALF_EVEN) -> Decimal:
        """A price on the tick grid (mode: ROUND_HALF_EVEN nearest, ROUND_FLOOR down, ROUND_CEILING up)."""
        return round_to(Decimal(repr(value)) if isinstance(value, float) else value, self.tick, mode)

    def qty(self, value: float | Decimal) -> Decimal:
        """A quantity on the step grid, always rounded down (never more than sized)."""
        return round_to(Decimal(repr(value)) if isinstance(value, float) else value, self.qty_step, ROUND_FLOOR)


def round_to(value: Decimal, step: Decimal, mode: str = ROUND_HALF_EVEN) -> Decimal:
    return ((value / step).to_integral_value(rounding=mode) * step).quantize(step)


KNOWN: dict[str, Instrument] = {
    i.symbol: i for i in (
        Instrument("BTCUSDT", Decimal("0.1"), Decimal("0.001"), Decimal("0.001")),
        Instrument("ETHUSDT", Decimal("0.01"), Decimal("0.01"), Decimal("0.01")),
        Instrument("SOLUSDT", Decimal("0.01"), Decimal("0.1"), Decimal("0.1")),
        Instrument("XRPUSDT", Decimal("0.0001"), Decimal("1"), Decimal("1")),
        Instrument("BNBUSDT", Decimal("0.1"), Decimal("0.01"), Decimal("0.01")),
        Instrument("DOGEUSDT", Decimal("0.00001"), Decimal("1"), Decimal("1")),
    )
}


def guess(symbol: str, price: float) -> Instrument:
    """A tick of five significant digits of price; a quantity step worth 1 to 10 USDT."""
    magnitude = math.floor(math.log10(price))
    tick = Decimal(1).scaleb(magnitude - 4)
    qty_step = Decimal(1).scaleb(-magnitude)
    return Instrument(symbol, tick, qty_step, qty_step)


class Instruments:
    """Lookup with a deterministic fallback; the exchange adapter may `add` live values."""

    def __init__(self, known: dict[str, Instrument] | None = None) -> None:
        self._by_symbol = dict(KNOWN if known is None else known)

    def add(self, instrument: Instrument) -> None:
        self._by_symbol[instrument.symbol] = instrument

    def get(self, symbol: str, price: float) -> Instrument:
        found = self._by_symbol.get(symbol)
        if found is None:
            found = self._by_symbol[symbol] = guess(symbol, price)
        return found


__all__ = ["ROUND_CEILING", "ROUND_FLOOR", "ROUND_HALF_EVEN", "Instrument", "Instruments", "round_to"]
