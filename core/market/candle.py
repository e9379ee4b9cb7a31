"""The closed candle every feed yields, the Feed protocol, and Bybit interval codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

# Bybit v5 kline interval codes and their length in milliseconds.
INTERVAL_MS: dict[str, int] = {
    "1": 60_000, "3": 180_000, "5": 300_000, "15": 900_000, "30": 1_800_000, "60": 3_600_000,
    "120": 7_200_000, "240": 14_400_000, "360": 21_600_000, "720": 43_200_000, "D": 86_400_000,
    "W": 604_800_000,
}
# File-name / human spellings ("15m", "1h", "1d") -> Bybit codes.
_ALIASES = {"1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "2h": "120", "4h": "240",
            "6h": "360", "12h": "720", "1d": "D", "1w": "W"}


class BadInterval(ValueError):
    pass


def parse_interval(text: str) -> str:
    """'15', '15m' or '1h' -> the Bybit code ('15', '15', '60')."""
    code = text.strip()
    code = _ALIASES.get(code.lower(), code.upper() if code.lower() in {"d", "w"} else code)
    if code not in INTERVAL_MS:
        raise BadInterval(f"unknown interval {text!r} (use one of {', '.join(INTERVAL_MS)} or 15m/1h/1d)")
    return code


def interval_label(code: str) -> str:
    """'15' -> '15m', '60' -> '1h', 'D' -> '1d' (file names, reports)."""
    return {v: k for k, v in _ALIASES.items()}[code]


MAX_MS = 32_503_680_000_000  # year 3000: a timestamp beyond it (or before 1970) from outside is garbage


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def dt_to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


@dataclass(slots=True)
class Candle:
    """A closed OHLCV candle. Prices are floats here (indicators); Decimal only at the order boundary.

    Nothing changes a candle once made (`dataclasses.replace` makes another). It is not a frozen dataclass only
    because a replay makes one per candle and a frozen one costs 2.4 times as much to build."""

    symbol: str
    interval: str  # Bybit code: "1", "3", "5", "15", "60", ..., "D"
    open_time: datetime  # UTC-aware
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float | None = None
    # the open time in ms, computed once: the engine asks for it several times per candle
    _ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._ms = dt_to_ms(self.open_time)

    @classmethod
    def at(cls, symbol: str, interval: str, open_ms: int, open: float, high: float, low: float, close: float,
           volume: float, turnover: float | None = None) -> Candle:
        """The candle opening at `open_ms` (files, the candle store): its ms taken as given, not recomputed."""
        c = cls.__new__(cls)
        c.symbol, c.interval, c.open_time, c._ms = symbol, interval, ms_to_dt(open_ms), open_ms
        c.open, c.high, c.low, c.close, c.volume, c.turnover = open, high, low, close, volume, turnover
        return c

    @property
    def open_ms(self) -> int:
        return self._ms

    @property
    def close_time(self) -> datetime:
        """The instant the candle closed (= next candle's open_time): when its data became known."""
        return ms_to_dt(self.open_ms + INTERVAL_MS[self.interval])


class Feed(Protocol):
    """Live Bybit, replayed files and the synthetic market all look like this to the engine."""

    def stream(self) -> AsyncIterator[Candle]:
        """Closed candles in time order (per symbol and interval, no duplicates the engine must care about)."""
        ...

    async def history(self, symbol: str, interval: str, limit: int) -> list[Candle]:
        """The latest `limit` closed candles before the stream starts, oldest first."""
        ...

    async def close(self) -> None:
        """Let go of what the feed holds (connections); a replayed market holds nothing."""
        ...
