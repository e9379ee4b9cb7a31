"""What an operator can be asked to decide: the kinds of recovery items and the options each offers.

The table is the only source of an item's buttons; core/recovery.py gives every option its effect (an
option without an effect fails at import there, so it can never be offered).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Decided:
    """A decision as storage took it: `ok` False when the item was already decided, expired, unknown, or
    the option is not one of its (`status` says which)."""

    ok: bool
    item_id: int
    status: str
    decision: str | None
    bot_id: str | None = None
    kind: str | None = None
    details: dict[str, Any] | None = None
    effect: dict[str, Any] | None = None


@dataclass(frozen=True)
class RecoveryDraft:
    """An item to raise: `dedupe_key` names the problem and the state it was seen in."""

    kind: str
    dedupe_key: str
    text: str
    options: list[str]
    details: dict[str, Any]
    critical: bool = True


class RecoveryKind(StrEnum):
    UNKNOWN_POSITION = "unknown_position"
    SIZE_MISMATCH = "size_mismatch"
    TRADE_WITHOUT_POSITION = "trade_without_position"
    UNPROTECTED_POSITION = "unprotected_position"  # adopted without a stop-loss
    DRAWDOWN_HALT = "drawdown_halt"
    ML_PROMOTE = "ml_promote"


class Option(StrEnum):
    ADOPT = "adopt"
    CLOSE_AT_MARKET = "close_at_market"
    ADOPT_EXCHANGE_SIZE = "adopt_exchange_size"
    MARK_CLOSED = "mark_closed"
    IGNORE = "ignore"
    RESUME = "resume"
    KEEP_HALTED = "keep_halted"
    PROMOTE = "promote"
    DISMISS = "dismiss"


# the only options an item may offer: each has an effect below
OPTIONS: dict[RecoveryKind, tuple[Option, ...]] = {
    RecoveryKind.UNKNOWN_POSITION: (Option.ADOPT, Option.CLOSE_AT_MARKET, Option.IGNORE),
    RecoveryKind.SIZE_MISMATCH: (Option.ADOPT_EXCHANGE_SIZE, Option.CLOSE_AT_MARKET, Option.IGNORE),
    RecoveryKind.TRADE_WITHOUT_POSITION: (Option.MARK_CLOSED, Option.IGNORE),
    RecoveryKind.UNPROTECTED_POSITION: (Option.CLOSE_AT_MARKET, Option.IGNORE),
    RecoveryKind.DRAWDOWN_HALT: (Option.RESUME, Option.KEEP_HALTED),
    RecoveryKind.ML_PROMOTE: (Option.PROMOTE, Option.DISMISS),
}

# what each option does, in the words the buttons' answers use
MEANING: dict[Option, str] = {
    Option.ADOPT: "the position becomes a trade of the desk, with the exchange's own stop-loss and take-profit",
    Option.CLOSE_AT_MARKET: "a reduce-only market order closes the exchange's current size",
    Option.ADOPT_EXCHANGE_SIZE: "the trade's quantity becomes the exchange's",
    Option.MARK_CLOSED: "the trade is closed at the last execution price (or the mark price, as an estimate)",
    Option.IGNORE: "nothing changes; this state is not raised again",
    Option.RESUME: "trading resumes; the peak equity resets to the current equity",
    Option.KEEP_HALTED: "the bot stays halted",
    Option.PROMOTE: "the challenger becomes the champion",
    Option.DISMISS: "the champion stays",
}


def options_of(kind: RecoveryKind | str) -> list[str]:
    return [str(o) for o in OPTIONS[RecoveryKind(kind)]]
