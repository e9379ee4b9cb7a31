"""Rendering for the operator interface: HTML escaping, <pre> tables, number formats, and splitting
under Telegram's 4096-character limit at line boundaries.

Everything a command shows is HTML (Telegram's HTML parse mode); the console turns the same text into
plain text with `plain()`, so both transports render through one set of functions.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from aiogram.filters.callback_data import CallbackData

# Telegram counts UTF-16 code units after parsing entities; measuring the HTML source (tags and
# entities included) in UTF-16 units over-counts, never under-counts. The margin covers nothing else.
MESSAGE_LIMIT = 4096
SAFE_LIMIT = 4000
CAPTION_LIMIT = 1024
DASH = "–"

_TAG = re.compile(r"<(/?)([a-zA-Z]+)[^>]*>")


@dataclass(frozen=True)
class Button:
    label: str
    data: CallbackData | None  # None: a button that opens `web_app` (the Mini App) instead of calling back
    web_app: str | None = None


@dataclass
class Reply:
    """One message of a command's answer, transport-neutral: HTML text, an optional PNG (sent as a photo
    with the text as caption), and inline buttons (rows)."""

    text: str
    photo: bytes | None = None
    photo_name: str = "chart.png"
    buttons: list[list[Button]] = field(default_factory=list)
    confirm_token: str | None = None  # the console asks "yes?" for this pending confirmation


def esc(value: Any) -> str:
    """Escape text for HTML parse mode (<, >, &; quotes are harmless outside attributes)."""
    return html.escape("" if value is None else str(value), quote=False)


def units(text: str) -> int:
    """Length as Telegram measures it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


# --- numbers and times ---------------------------------------------------------------------------------
def num(x: Any, digits: int = 2, sign: bool = False) -> str:
    if x is None:
        return DASH
    try:
        value = float(x)
    except (TypeError, ValueError):
        return str(x)
    if value != value:  # NaN
        return DASH
    return f"{value:+,.{digits}f}" if sign else f"{value:,.{digits}f}"


def money(x: Any, sign: bool = True) -> str:
    return num(x, 2, sign)


def pct(x: Any, ratio: bool = True, digits: int = 1) -> str:
    """A percentage; `ratio` means x is 0..1 (win rates), otherwise x already is in percent."""
    if x is None:
        return DASH
    return f"{float(x) * (100 if ratio else 1):.{digits}f}%"


def r(x: Any) -> str:
    return DASH if x is None else f"{float(x):+.2f}R"


def price(x: Any) -> str:
    """Prices keep their significant digits (an XRP price is not a BTC price)."""
    if x is None:
        return DASH
    value = Decimal(str(x))
    return f"{value.normalize():f}" if abs(value) < 1000 else f"{float(value):,.2f}"


def level(x: Any) -> str:
    """A price-like figure (an EMA, a band, an ATR) to the precision its size needs: 5 significant digits
    under 1,000 (0.52341, 3.1416), cents above (57,123.45)."""
    if x is None:
        return DASH
    v = float(x)
    if v != v:
        return DASH
    return f"{v:,.2f}" if abs(v) >= 1000 else f"{v:.5g}"


def duration(seconds: Any) -> str:
    """Seconds as an operator reads them: 42 s, 5 min, 3 h 20 min, 2 d 4 h."""
    if seconds is None:
        return DASH
    s = float(seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86_400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86_400)} d {int(s % 86_400 // 3600)} h"


def value(x: Any) -> str:
    """A setting as an operator writes it: Decimal("1.0000000000") -> "1", None -> "–"."""
    if x is None:
        return DASH
    if isinstance(x, Decimal):
        return f"{x.normalize():f}" if x == x.to_integral_value() or abs(x) < 10**12 else str(x)
    return str(x)


def when(t: datetime | date | None) -> str:
    if t is None:
        return DASH
    if isinstance(t, datetime):
        return t.strftime("%Y-%m-%d %H:%M")
    return t.isoformat()


# --- blocks ----------------------------------------------------------------------------------------------
def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None, right: Iterable[int] = ()) -> str:
    """A monospace table in <pre>; columns in `right` are right-aligned (numbers)."""
    body = [list(map(str, header))] if header else []
    body += [[DASH if c is None else str(c) for c in row] for row in rows]
    if not body:
        return ""
    widths = [max(len(row[i]) for row in body if i < len(row)) for i in range(max(len(r) for r in body))]
    aligned = set(right)
    lines = []
    for row in body:
        cells = [c.rjust(widths[i]) if i in aligned else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "<pre>" + esc("\n".join(lines)) + "</pre>"


def kv(pairs: Iterable[tuple[str, Any]]) -> str:
    """`label: value` lines; values are escaped here."""
    return "\n".join(f"{esc(k)}: <b>{esc(v)}</b>" for k, v in pairs)


def title(text: str) -> str:
    return f"<b>{esc(text)}</b>"


def error(message: str, usage: str | None = None) -> str:
    """The one-line reply to a bad command: what is wrong, and how to write it."""
    line = f"⚠️ {esc(message)}"
    return f"{line} — usage: <code>{esc(usage)}</code>" if usage else line


# --- splitting ------------------------------------------------------------------------------------------------
def _open_after(stack: list[tuple[str, str]], line: str) -> list[tuple[str, str]]:
    stack = list(stack)
    for m in _TAG.finditer(line):
        closing, name = m.group(1), m.group(2).lower()
        if closing:
            for i in range(len(stack) - 1, -1, -1):
                if stack[i][0] == name:
                    del stack[i:]
                    break
        else:
            stack.append((name, m.group(0)))
    return stack


def _closing(stack: list[tuple[str, str]]) -> str:
    return "".join(f"</{name}>" for name, _ in reversed(stack))


def _opening(stack: list[tuple[str, str]]) -> str:
    return "".join(tag for _, tag in stack)


def _hard_cut(line: str, room: int) -> int:
    """Where to cut an over-long line: at most `room` units, never inside a tag or an entity."""
    cut = max(1, min(len(line), room))
    while units(line[:cut]) > room and cut > 1:
        cut -= 1
    head = line[:cut]
    lt, amp = head.rfind("<"), head.rfind("&")
    if lt > head.rfind(">"):
        cut = lt or cut
    elif amp > head.rfind(";"):
        cut = amp or cut
    return cut


def split(text: str, limit: int = SAFE_LIMIT) -> list[str]:
    """Chunks of at most `limit` UTF-16 units, cut at line boundaries; a tag open at a cut (a long
    <pre> table) is closed at the end of one chunk and reopened at the start of the next."""
    if units(text) <= limit:
        return [text]
    chunks: list[str] = []
    current = ""
    stack: list[tuple[str, str]] = []  # the tags open at the end of `current`
    for line in text.split("\n"):
        while True:
            after = _open_after(stack, line)
            candidate = (current + "\n" + line) if current else _opening(stack) + line
            if units(candidate) + units(_closing(after)) <= limit:
                current, stack = candidate, after
                break
            if current and current != _opening(stack):
                chunks.append(current + _closing(stack))
                current = ""
                continue
            # one line longer than a message: cut it where no tag or entity breaks
            room = limit - units(_opening(stack)) - units(_closing(stack)) - 16
            cut = _hard_cut(line, room)
            piece, line = line[:cut], line[cut:]
            stack_after_piece = _open_after(stack, piece)
            chunks.append(_opening(stack) + piece + _closing(stack_after_piece))
            stack, current = stack_after_piece, ""
            if not line:
                break
    if current and current != _opening(stack):
        chunks.append(current + _closing(stack))
    return [c for c in chunks if c.strip()]


def plain(text: str) -> str:
    """The same text for a terminal: tags dropped, entities decoded."""
    return html.unescape(_TAG.sub("", text))
