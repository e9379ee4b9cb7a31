"""funding: the perpetuals' settlements per symbol and time; a phantom's funding in R

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0003'
down_revision: str | Sequence[str] | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('funding_rates',
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rate', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.PrimaryKeyConstraint('symbol', 'time', name=op.f('pk_funding_rates'))
    )
    with op.batch_alter_table('phantom_trades') as batch:
        batch.add_column(sa.Column('funding_r', sa.Double(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('phantom_trades') as batch:
        batch.drop_column('funding_r')
    op.drop_table('funding_rates')
