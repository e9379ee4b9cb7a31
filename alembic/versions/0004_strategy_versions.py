"""strategies are plugins: signals carry their strategy's version; each built-in has its own parameters

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 05:00:00

- signals.strategy_version: the hash of the strategy's source that proposed the signal (NULL for older
  signals); recent_signals (SELECT *) is recreated so PostgreSQL's view shows it
- bots.strategies: the built-ins no longer share one parameter bag; the keys a built-in never read are
  dropped from stored bots (their models refuse unknown keys). Downgrading needs nothing back: the old
  bag filled missing keys with its defaults, which those strategies did not read.
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0004'
down_revision: str | Sequence[str] | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECENT_SIGNALS = {
    "postgresql": "CREATE VIEW recent_signals AS SELECT * FROM signals "
                  "WHERE created_at >= now() - interval '24 hours'",
    "sqlite": "CREATE VIEW recent_signals AS SELECT * FROM signals "
              "WHERE created_at >= datetime('now', '-1 day')",
}

# what the shared bag held that each built-in never read (as of this revision)
UNREAD = {"trend_pullback": ("rsi_low", "rsi_high", "volume_z"), "mean_reversion": ("reward_risk", "volume_z")}


def _recreate_recent_signals(change: Callable[[], None]) -> None:
    op.execute("DROP VIEW IF EXISTS recent_signals")  # a view reading signals blocks (or hides) the change
    change()
    op.execute(RECENT_SIGNALS[op.get_bind().dialect.name])


def _drop_unread_keys() -> None:
    bots = sa.table("bots", sa.column("id", sa.String()), sa.column("strategies", sa.JSON()))
    conn = op.get_bind()
    for bot_id, strategies in conn.execute(sa.select(bots.c.id, bots.c.strategies)).all():
        if not isinstance(strategies, dict):
            continue
        kept = {name: {k: v for k, v in params.items() if k not in UNREAD.get(name, ())}
                if isinstance(params, dict) else params for name, params in strategies.items()}
        if kept != strategies:
            conn.execute(bots.update().where(bots.c.id == bot_id).values(strategies=kept))


def upgrade() -> None:
    def add() -> None:
        with op.batch_alter_table('signals') as batch:
            batch.add_column(sa.Column('strategy_version', sa.String(length=12), nullable=True))

    _recreate_recent_signals(add)
    _drop_unread_keys()


def downgrade() -> None:
    def drop() -> None:
        with op.batch_alter_table('signals') as batch:
            batch.drop_column('strategy_version')

    _recreate_recent_signals(drop)
