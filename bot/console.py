"""`python -m bot console`: the Telegram commands typed in a terminal, through the same desk API.

    $ python -m bot console
    desk> /stats 7
    desk> bots
    desk> /pause main volatile market

Each line is a command ("/stats 7" or "stats 7"); the reply is the same rendering as in Telegram, as
plain text. The console acts as the admin "console" (what it changes is audited under that name). It
runs beside the host or without it: the Desk here has no runtime, so it reads the database and writes
pause/resume/risk to it (a running host applies a pause at its next restart; live views such as open
positions and /analysis need the host). Confirmations are typed ("yes"); charts are written as PNG
files under the data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bot.settings import Settings, normalize_database_url

PROMPT = "desk> "


def register(subparsers: Any, settings: Callable[[], Settings]) -> None:
    console = subparsers.add_parser("console", help="the Telegram commands typed in a terminal")
    console.add_argument("--db", help="database URL (default: DATABASE_URL)")
    console.set_defaults(func=lambda args: _main(args, settings))


def _main(args: argparse.Namespace, settings_fn: Callable[[], Settings]) -> int:
    settings = settings_fn()
    url = normalize_database_url(args.db) if args.db else settings.database_url
    return asyncio.run(run(url, settings.data_dir / "charts", sys.stdin, sys.stdout))


async def run(url: str, chart_dir: Path, stdin: TextIO, stdout: TextIO) -> int:
    from bot.telegram.commands import Context, execute, parse_line
    from bot.telegram.keyboards import Confirm, Confirmations, press
    from bot.telegram.render import plain
    from core.desk import Actor, Desk
    from storage.db import create_engine
    from storage.desk_store import SqlDeskStore
    from storage.migrations import NotAtHead, ensure_at_head

    engine = create_engine(url)
    try:
        try:
            await ensure_at_head(engine)
        except NotAtHead as exc:
            stdout.write(f"{exc}\n")
            return 3
        desk = Desk(SqlDeskStore(engine), None, clock=lambda: datetime.now(UTC))
        ctx = Context(desk, Actor(None, "console", "admin"), Confirmations())
        interactive = stdin.isatty()

        async def readline() -> str | None:
            if interactive:
                stdout.write(PROMPT)
                stdout.flush()
            line = await asyncio.to_thread(stdin.readline)
            return line if line else None

        while (line := await readline()) is not None:
            name, words, _ = parse_line(line)
            if not name or name.startswith("#"):
                continue
            if name in ("quit", "exit"):
                break
            try:
                replies = await execute(ctx, name, words)
            except Exception as exc:  # the console stays up; the error is shown, not hidden
                stdout.write(f"error: {type(exc).__name__}: {exc}\n")
                continue
            for reply in replies:
                stdout.write(plain(reply.text) + "\n")
                if reply.photo is not None:
                    path = chart_dir / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{reply.photo_name}"
                    await asyncio.to_thread(_write, path, reply.photo)
                    stdout.write(f"chart written to {path}\n")
                if reply.confirm_token is not None:
                    pending = ctx.confirmations.items.get(reply.confirm_token)
                    stdout.write("type yes to confirm: ")
                    stdout.flush()
                    answer = await asyncio.to_thread(stdin.readline)
                    if pending is not None:
                        action = pending.action if answer.strip().lower() in ("y", "yes") else "cancel"
                        result = await press(ctx, Confirm(action=action, target=pending.target, token=pending.token))
                        stdout.write(plain(result.edit.text if result.edit else result.answer) + "\n")
            stdout.flush()
        return 0
    finally:
        await engine.dispose()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
