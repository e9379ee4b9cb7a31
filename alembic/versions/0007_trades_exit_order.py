"""trades in exit order: the Mini App's trades pages (keyset on exit_time, id) and /recent's newest trade

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 06:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | Sequence[str] | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f('ix_trades_status_exit_time_id'), 'trades', ['status', 'exit_time', 'id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_trades_status_exit_time_id'), table_name='trades')
