"""Alembic, driven from Python: `python -m bot migrate` and the start-up "at head?" check.

The check imports no Alembic (a sixth of a replay's start-up): the newest revision is HEAD, which
tests/integration/test_migrations.py holds equal to alembic/versions' head, and the database's revision is one
row of `alembic_version`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
HEAD = "0008"  # the newest in alembic/versions: a new migration moves it (test_head_check fails until it does)


class NotAtHead(RuntimeError):
    """The database schema is older (or newer) than this code."""


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    return HEAD


async def current_revision(db: AsyncEngine) -> str | None:
    """The database's revision; None for a database Alembic never touched (or left at base)."""
    async with db.connect() as conn:
        if not await conn.run_sync(lambda c: inspect(c).has_table("alembic_version")):
            return None
        rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    if len(rows) > 1:
        raise NotAtHead(f"the database has several migration heads ({', '.join(sorted(rows))})")
    return rows[0] if rows else None


async def ensure_at_head(db: AsyncEngine) -> str:
    current, head = await current_revision(db), head_revision()
    if current != head:
        raise NotAtHead(
            f"the database is at migration {current or 'none (empty)'}, this code needs {head}: "
            "run `python -m bot migrate` first"
        )
    return current
