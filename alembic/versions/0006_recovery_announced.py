"""recovery items remember that they were announced: a restart does not send them again

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 06:00:00

- recovery_items.announced_at: when the notifier first delivered the item with its buttons (NULL: not yet).
  The items pending at this upgrade were announced by the process that raised them.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# plain ALTER TABLE on both dialects (SQLite >= 3.35 drops a column in place): a batch would rebuild the
# table, which SQLite refuses while bot_status_view reads it
def upgrade() -> None:
    op.add_column('recovery_items', sa.Column('announced_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE recovery_items SET announced_at = created_at")


def downgrade() -> None:
    op.drop_column('recovery_items', 'announced_at')
