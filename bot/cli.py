"""What the database subcommands of `python -m bot` share: exit codes, CliError (one line on stderr, no
traceback), and a migrated database for one command whose failures end it with one line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from bot.settings import Settings

log = logging.getLogger("phantomdesk")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_NOT_MIGRATED = 3  # bot.host's code for the same refusal (not imported: it pulls in aiogram, ~2 s)
EXIT_INTERRUPTED = 130

SettingsFn = Callable[[], "Settings"]


class OneLineParser(argparse.ArgumentParser):
    """A bad argument ends the command with one line naming it (`python -m bot replay: argument --intervals:
    ...`) and exit code 2, never a traceback or a screen of usage; `--help` still prints the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (--help shows the usage)\n")


def interval_pair(text: str) -> tuple[str, str]:
    """--intervals: the slow and the fast interval, the fast one dividing the slow one (15,5 or 1h,15m)."""
    from core.market.candle import INTERVAL_MS, BadInterval, parse_interval

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"give the slow and the fast interval, like 15,5 (got {text!r})")
    try:
        slow, fast = parse_interval(parts[0]), parse_interval(parts[1])
    except BadInterval as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if INTERVAL_MS[fast] >= INTERVAL_MS[slow] or INTERVAL_MS[slow] % INTERVAL_MS[fast]:
        raise argparse.ArgumentTypeError(f"the fast interval must be shorter than the slow one and divide it, "
                                         f"like 15,5 (got {text!r})")
    return slow, fast


def positive(kind: type[int] | type[float], what: str = "a number") -> Callable[[str], int | float]:
    """An argparse type: a positive int or float, with a message naming what was expected."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} above 0")
        return value
    return parse


class CliError(Exception):
    """Ends the command with one line on stderr and an exit code; no traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def run_command(call: Callable[[], int], interrupted: str = "interrupted") -> int:
    """`call()`'s exit code; a CliError becomes its line on stderr and its code, Ctrl-C exit 130."""
    try:
        return call()
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED


async def ensure_at_head(db: AsyncEngine) -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the head check is routine, not news
    from storage.migrations import NotAtHead
    from storage.migrations import ensure_at_head as check

    try:
        await check(db)
    except NotAtHead as exc:
        raise CliError(str(exc), EXIT_NOT_MIGRATED) from None
    except Exception as exc:
        raise CliError(f"cannot reach the database: {exc}") from None


@asynccontextmanager
async def database(url: str, what: str, *, null_pool: bool = False,
                   outcome: str = "its transaction was rolled back") -> AsyncIterator[AsyncEngine]:
    """The database at `url`, refused unless at the newest migration (exit 3, like the host). The database
    or the disk saying no ends the command `what` with one line ending in `outcome`; details in debug logs."""
    from asyncpg import PostgresError
    from sqlalchemy.exc import SQLAlchemyError

    from storage.db import create_engine

    engine = create_engine(url, null_pool=null_pool)
    try:
        await ensure_at_head(engine)
        yield engine
    except (SQLAlchemyError, PostgresError, OSError) as exc:
        log.debug("%s failed", what, exc_info=True)
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CliError(f"{type(exc).__name__}: {first[:300]} ({outcome})") from None
    finally:
        await engine.dispose()
