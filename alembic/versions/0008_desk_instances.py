"""desk_instances: the desk processes on one database, their heartbeats and bots (placement across replicas)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0008'
down_revision: str | Sequence[str] | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'desk_instances',
        sa.Column('id', sa.String(length=128), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('bots', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_desk_instances')),
    )
    op.create_index(op.f('ix_desk_instances_heartbeat_at'), 'desk_instances', ['heartbeat_at'])


def downgrade() -> None:
    op.drop_index(op.f('ix_desk_instances_heartbeat_at'), table_name='desk_instances')
    op.drop_table('desk_instances')
