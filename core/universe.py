"""A bot's symbol universe as a rule: the top N USDT perpetuals by 24 h turnover, with floors on turnover and
listing age, and symbols included or excluded by hand.

Pure and deterministic: the market's facts (instruments, 24 h turnovers) and "now" are passed in; where they
come from (Bybit's REST, candle files at a replay's market time) is behind the `MarketDirectory` port.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

QUOTE = "USDT"  # the universe is USDT-quoted linear perpetuals only


def normalize_symbol(text: str) -> str:
    """'btcusdt ' -> 'BTCUSDT'; a ValueError naming the text when it is no USDT/USDC linear symbol."""
    s = text.strip().upper()
    if not s.isalnum() or not s.endswith(("USDT", "USDC")):
        raise ValueError(f"{s!r} is not a USDT/USDC linear perpetual symbol like BTCUSDT")
    return s


def symbol_list(texts: list[str]) -> list[str]:
    """A list of symbols as written in a bot's file: each normalized, none twice (a ValueError says which)."""
    out = [normalize_symbol(s) for s in texts]
    if len(set(out)) != len(out):
        raise ValueError("a symbol is listed twice")
    return out


class UniverseRule(BaseModel):
    """`universe:` in a bot's file, instead of a `symbols:` list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top: int = Field(20, ge=1, le=500, description="the N symbols with the highest 24 h turnover")
    min_turnover_usd: Decimal = Field(Decimal(0), ge=0, description="24 h turnover floor (USDT)")
    min_age_days: int = Field(0, ge=0, le=3650, description="listed at least this many days ago")
    include: list[str] = Field(default_factory=list, description="always in (while Trading), beside the top N")
    exclude: list[str] = Field(default_factory=list, description="never in")
    refresh_minutes: int | None = Field(None, ge=1, le=10_080,
                                        description="this bot's refresh interval (default: UNIVERSE_REFRESH_S)")

    @field_validator("include", "exclude")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        return symbol_list(value)

    @model_validator(mode="after")
    def _disjoint(self) -> UniverseRule:
        both = sorted(set(self.include) & set(self.exclude))
        if both:
            raise ValueError(f"{both[0]} is both included and excluded")
        return self


@dataclass(frozen=True, slots=True)
class Listing:
    """One instrument of /v5/market/instruments-info (category linear)."""

    symbol: str
    status: str  # Trading, PreLaunch, Delivering, Closed
    quote: str
    launched: datetime


@dataclass(frozen=True, slots=True)
class Turnover:
    """24 h turnover (quote currency) of one symbol: /v5/market/tickers' turnover24h, or summed from candles."""

    symbol: str
    turnover_24h: Decimal


class MarketDirectory(Protocol):
    """Where the market's listings and turnovers come from (Bybit's REST, or candle files in a replay)."""

    async def listings(self) -> list[Listing]: ...

    async def turnovers(self, now: datetime) -> list[Turnover]: ...


class Why(StrEnum):
    RANKED = "ranked"
    INCLUDED = "included by hand"


@dataclass(frozen=True, slots=True)
class Member:
    symbol: str
    why: Why
    rank: int | None  # 1 = the highest turnover among the eligible; None when included by hand out of the top
    turnover_24h: Decimal | None

    def describe(self) -> str:
        turnover = f"{self.turnover_24h:,.0f} USDT" if self.turnover_24h is not None else "no turnover reported"
        if self.why is Why.RANKED:
            return f"#{self.rank} by 24 h turnover ({turnover})"
        return f"included by hand ({turnover})"


@dataclass(frozen=True, slots=True)
class Universe:
    """The symbols a rule selected at `at`, each with why; and what it left aside that an operator asked for."""

    at: datetime
    members: tuple[Member, ...]
    unavailable: tuple[str, ...] = ()  # included by hand but not listed as Trading
    eligible: int = 0  # symbols that passed every filter (the top N were taken from these)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(m.symbol for m in self.members)

    def member(self, symbol: str) -> Member | None:
        return next((m for m in self.members if m.symbol == symbol), None)


@dataclass(frozen=True, slots=True)
class UniverseChange:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


@dataclass(frozen=True, slots=True)
class Rejection:
    symbol: str
    reason: str


@dataclass(frozen=True)
class Selection:
    universe: Universe
    rejected: list[Rejection] = field(default_factory=list)  # the filters' reasons (for logs and tests)


@dataclass(frozen=True, slots=True)
class UniverseView:
    """/universe for one bot: its rule, the current selection (None before the first), and the symbols it left
    that it still holds open trades or phantoms on (their candles keep coming until those end)."""

    bot_id: str
    rule: UniverseRule
    universe: Universe | None
    held: tuple[str, ...]


def select(rule: UniverseRule, listings: Iterable[Listing], turnovers: Iterable[Turnover], now: datetime) -> Selection:
    """The universe of `rule` at `now`. Ties in turnover go to the symbol that sorts first, so the same facts
    always give the same set."""
    by_symbol = {t.symbol: t.turnover_24h for t in turnovers}
    trading = {lst.symbol: lst for lst in listings if lst.status == "Trading" and lst.quote == QUOTE}
    excluded = set(rule.exclude)
    oldest_launch = now - timedelta(days=rule.min_age_days)
    rejected: list[Rejection] = []
    eligible: list[tuple[Decimal, str]] = []
    for symbol in sorted(trading):
        turnover = by_symbol.get(symbol)
        if symbol in excluded:
            rejected.append(Rejection(symbol, "excluded by hand"))
        elif turnover is None:
            rejected.append(Rejection(symbol, "no 24 h turnover reported"))
        elif turnover < rule.min_turnover_usd:
            rejected.append(Rejection(symbol, f"24 h turnover {turnover} below {rule.min_turnover_usd}"))
        elif trading[symbol].launched > oldest_launch:
            rejected.append(Rejection(symbol, f"listed {trading[symbol].launched:%Y-%m-%d}, under "
                                              f"{rule.min_age_days} days ago"))
        else:
            eligible.append((turnover, symbol))
    eligible.sort(key=lambda ts: (-ts[0], ts[1]))
    members = [Member(symbol, Why.RANKED, rank, turnover)
               for rank, (turnover, symbol) in enumerate(eligible[: rule.top], start=1)]
    rejected += [Rejection(symbol, f"ranked #{rank} by turnover, beyond the top {rule.top}")
                 for rank, (_, symbol) in enumerate(eligible[rule.top:], start=rule.top + 1)]
    chosen = {m.symbol for m in members}
    unavailable = []
    for symbol in rule.include:
        if symbol in chosen:
            continue
        if symbol not in trading:
            unavailable.append(symbol)
            continue
        members.append(Member(symbol, Why.INCLUDED, None, by_symbol.get(symbol)))
    return Selection(Universe(now, tuple(members), tuple(unavailable), len(eligible)), rejected)


def change(old: Sequence[str], new: Sequence[str]) -> UniverseChange:
    before, after = set(old), set(new)
    return UniverseChange(tuple(sorted(after - before)), tuple(sorted(before - after)))


def by_hand(rule: UniverseRule, now: datetime) -> Universe:
    """What a bot trades while no market facts could be had (its first refresh failed): its included symbols."""
    return Universe(now, tuple(Member(s, Why.INCLUDED, None, None) for s in rule.include))
