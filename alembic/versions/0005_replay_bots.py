"""replay bots: the bots of `replay` and `demo` are research records the host never trades

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 05:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0005'
down_revision: str | Sequence[str] | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _mode_check(allowed: str) -> None:
    """Replace the bots.mode check. SQLite rebuilds the table for it and refuses while a view reads it: its
    views are set aside (their own SQL, as stored) and put back."""
    bind = op.get_bind()
    views: list[tuple[str, str]] = []
    if bind.dialect.name == "sqlite":
        views = [(r[0], r[1]) for r in bind.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'view'"))]
        for name, _ in views:
            op.execute(f"DROP VIEW {name}")
    with op.batch_alter_table('bots') as batch:
        batch.drop_constraint(op.f('ck_bots_mode'), type_='check')
        batch.create_check_constraint(op.f('ck_bots_mode'), f"mode IN ({allowed})")
    for _, sql in views:
        op.execute(sql)


def upgrade() -> None:
    _mode_check("'paper', 'live', 'replay'")
    # the bots earlier replays and demos created: a trade of theirs says so
    op.execute("UPDATE bots SET mode = 'replay' WHERE id IN (SELECT DISTINCT bot_id FROM trades WHERE mode = 'replay')")


def downgrade() -> None:
    op.execute("UPDATE bots SET mode = 'paper' WHERE mode = 'replay'")
    _mode_check("'paper', 'live'")
