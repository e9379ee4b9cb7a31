"""What the database subcommands of `python -m bot` share: exit codes, CliError (one line on stderr, no
traceback), and a migrated database for one command whose failures end it with one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from bot.settings import Settings

log = logging.getLogger("phantomdesk")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_NOT_MIGRATED = 3  # bot.host's code for the same refusal (not imported: it pulls in aiogram, ~2 s)
EXIT_INTERRUPTED = 130

SettingsFn = Callable[[], "Settings"]


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


async def ensure_at_head(engine: AsyncEngine) -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the head check is routine, not news
    from storage.migrations import NotAtHead
    from storage.migrations import ensure_at_head as check

    try:
        await check(engine)
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
