"""Alembic, driven from Python: `python -m bot migrate` and the start-up "at head?" check."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command

ROOT = Path(__file__).resolve().parent.parent


class NotAtHead(RuntimeError):
    """The database schema is older (or newer) than this code."""


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None, "alembic/versions holds no migration"
    return head


async def current_revision(db: AsyncEngine) -> str | None:
    async with db.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def ensure_at_head(db: AsyncEngine) -> str:
    current, head = await current_revision(db), head_revision()
    if current != head:
        raise NotAtHead(
            f"the database is at migration {current or 'none (empty)'}, this code needs {head}: "
            "run `python -m bot migrate` first"
        )
    return current
