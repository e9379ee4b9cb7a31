"""recovery effects, funding on trades, halts since when

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 03:00:00

- trades.funding (received + / paid −, part of net PnL), trades.exit_estimated, exit reason
  "reconciled_manual" (a trade an admin marked closed; the column grows to 24 characters)
- recovery_items.effect: what a decision did (or "acting" while it is being done)
- bots.status_since, shown by bot_status_view: a halted bot says since when
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_REASONS = "'tp', 'sl', 'trailing', 'manual', 'reconciled', 'liquidation', 'timeout', 'gap'"
NEW_REASONS = "'tp', 'sl', 'trailing', 'manual', 'reconciled', 'reconciled_manual', 'liquidation', 'timeout', 'gap'"

STATUS_VIEW = """
CREATE VIEW bot_status_view AS
SELECT b.id AS bot_id, b.name, b.mode, b.status, b.status_reason, {since}b.last_heartbeat, b.owner_instance,
       (SELECT count(*) FROM trades t WHERE t.bot_id = b.id AND t.status = 'open') AS open_trades,
       (SELECT count(*) FROM recovery_items r WHERE r.bot_id = b.id AND r.status = 'pending') AS pending_recovery,
       (SELECT s.equity FROM bot_states s WHERE s.bot_id = b.id ORDER BY s.taken_at DESC LIMIT 1) AS equity,
       (SELECT s.taken_at FROM bot_states s WHERE s.bot_id = b.id ORDER BY s.taken_at DESC LIMIT 1) AS state_at
FROM bots b
"""

# SQLite rebuilds a table to change it (batch mode) and refuses while a view reads the table
PERFORMANCE_VIEW = """
CREATE VIEW bot_performance_summary AS
SELECT b.id AS bot_id,
       count(t.id) AS trades,
       coalesce(sum(CASE WHEN t.net_pnl > 0 THEN 1 ELSE 0 END), 0) AS wins,
       coalesce(sum(CASE WHEN t.net_pnl <= 0 THEN 1 ELSE 0 END), 0) AS losses,
       CASE WHEN count(t.id) > 0
            THEN 1.0 * sum(CASE WHEN t.net_pnl > 0 THEN 1 ELSE 0 END) / count(t.id) ELSE 0 END AS win_rate,
       coalesce(sum(t.net_pnl), 0) AS net_pnl,
       coalesce(sum(t.fees), 0) AS fees,
       min(t.entry_time) AS first_entry,
       max(t.exit_time) AS last_exit
FROM bots b LEFT JOIN trades t ON t.bot_id = b.id AND t.status = 'closed'
GROUP BY b.id
"""


def _drop_views() -> None:
    op.execute("DROP VIEW IF EXISTS bot_status_view")
    op.execute("DROP VIEW IF EXISTS bot_performance_summary")


def upgrade() -> None:
    _drop_views()
    with op.batch_alter_table('trades') as batch:
        batch.drop_constraint(op.f('ck_trades_exit_reason'), type_='check')
        batch.alter_column('exit_reason', existing_type=sa.String(length=16), type_=sa.String(length=24),
                           existing_nullable=True)
        batch.add_column(sa.Column('funding', sa.Numeric(precision=28, scale=10), nullable=False,
                                   server_default='0'))
        batch.add_column(sa.Column('exit_estimated', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_check_constraint(op.f('ck_trades_exit_reason'),
                                      f"exit_reason IN ({NEW_REASONS}) OR exit_reason IS NULL")
    with op.batch_alter_table('recovery_items') as batch:
        batch.add_column(sa.Column('effect', sa.JSON(), nullable=True))
    with op.batch_alter_table('bots') as batch:
        batch.add_column(sa.Column('status_since', sa.DateTime(timezone=True), nullable=True))
    op.execute(STATUS_VIEW.format(since="b.status_since, "))
    op.execute(PERFORMANCE_VIEW)


def downgrade() -> None:
    _drop_views()
    with op.batch_alter_table('bots') as batch:
        batch.drop_column('status_since')
    with op.batch_alter_table('recovery_items') as batch:
        batch.drop_column('effect')
    op.execute("UPDATE trades SET exit_reason = 'manual' WHERE exit_reason = 'reconciled_manual'")
    with op.batch_alter_table('trades') as batch:
        batch.drop_constraint(op.f('ck_trades_exit_reason'), type_='check')
        batch.drop_column('exit_estimated')
        batch.drop_column('funding')
        batch.alter_column('exit_reason', existing_type=sa.String(length=24), type_=sa.String(length=16),
                           existing_nullable=True)
        batch.create_check_constraint(op.f('ck_trades_exit_reason'),
                                      f"exit_reason IN ({OLD_REASONS}) OR exit_reason IS NULL")
    op.execute(STATUS_VIEW.format(since=""))
    op.execute(PERFORMANCE_VIEW)
