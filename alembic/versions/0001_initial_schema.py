"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24 02:44:32.003687
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0001'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Views are not in the models' metadata; they are plain SQL, frozen here with the schema they read.
BOT_STATUS_VIEW = """
CREATE VIEW bot_status_view AS
SELECT b.id AS bot_id, b.name, b.mode, b.status, b.status_reason, b.last_heartbeat, b.owner_instance,
       (SELECT count(*) FROM trades t WHERE t.bot_id = b.id AND t.status = 'open') AS open_trades,
       (SELECT count(*) FROM recovery_items r WHERE r.bot_id = b.id AND r.status = 'pending') AS pending_recovery,
       (SELECT s.equity FROM bot_states s WHERE s.bot_id = b.id ORDER BY s.taken_at DESC LIMIT 1) AS equity,
       (SELECT s.taken_at FROM bot_states s WHERE s.bot_id = b.id ORDER BY s.taken_at DESC LIMIT 1) AS state_at
FROM bots b
"""

BOT_PERFORMANCE_SUMMARY = """
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

RECENT_SIGNALS = {
    "postgresql": "CREATE VIEW recent_signals AS SELECT * FROM signals "
                  "WHERE created_at >= now() - interval '24 hours'",
    # SQLite stores UTC as 'YYYY-MM-DD HH:MM:SS[.ffffff]', which compares correctly as text
    "sqlite": "CREATE VIEW recent_signals AS SELECT * FROM signals "
              "WHERE created_at >= datetime('now', '-1 day')",
}

VIEWS = ("recent_signals", "bot_performance_summary", "bot_status_view")


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('bot_id', sa.String(length=64), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index(op.f('ix_audit_log_at'), 'audit_log', ['at'], unique=False)
    op.create_index(op.f('ix_audit_log_bot_id_at'), 'audit_log', ['bot_id', 'at'], unique=False)

    op.create_table('bots',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('symbols', sa.JSON(), nullable=False),
    sa.Column('intervals', sa.JSON(), nullable=False),
    sa.Column('strategies', sa.JSON(), nullable=False),
    sa.Column('capital', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('risk_pct', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('risk_usd', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('max_leverage', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('max_positions', sa.Integer(), nullable=False),
    sa.Column('max_position_notional', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('trailing_stop_pct', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('breakeven_at_r', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('phantom_timeout_candles', sa.Integer(), nullable=False),
    sa.Column('drawdown_guard_pct', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('daily_loss_limit_pct', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('ml_threshold', sa.Double(), nullable=False),
    sa.Column('ml_min_p', sa.Double(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('mode', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('last_heartbeat', sa.DateTime(timezone=True), nullable=True),
    sa.Column('owner_instance', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("mode IN ('paper', 'live')", name=op.f('ck_bots_mode')),
    sa.CheckConstraint("status IN ('running', 'paused', 'halted')", name=op.f('ck_bots_status')),
    sa.CheckConstraint('capital > 0', name=op.f('ck_bots_capital_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bots'))
    )
    op.create_table('candles',
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('interval', sa.String(length=8), nullable=False),
    sa.Column('open_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('open', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('high', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('low', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('close', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('volume', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('turnover', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.PrimaryKeyConstraint('symbol', 'interval', 'open_time', name=op.f('pk_candles'))
    )
    op.create_table('job_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('bot_id', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.CheckConstraint("status IN ('running', 'ok', 'error', 'missed')", name=op.f('ck_job_runs_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_runs'))
    )
    op.create_index(op.f('ix_job_runs_job_id_started_at'), 'job_runs', ['job_id', 'started_at'], unique=False)

    op.create_table('bot_states',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('bot_id', sa.String(length=64), nullable=False),
    sa.Column('taken_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('equity', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('peak_equity', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('drawdown_pct', sa.Double(), nullable=False),
    sa.Column('halted', sa.Boolean(), nullable=False),
    sa.Column('halt_reason', sa.Text(), nullable=True),
    sa.Column('open_positions', sa.JSON(), nullable=False),
    sa.Column('trailing_stops', sa.JSON(), nullable=False),
    sa.Column('counters', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['bot_id'], ['bots.id'], name=op.f('fk_bot_states_bot_id_bots'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bot_states'))
    )
    op.create_index(op.f('ix_bot_states_bot_id_taken_at'), 'bot_states', ['bot_id', 'taken_at'], unique=False)

    op.create_table('equity_snapshots',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('bot_id', sa.String(length=64), nullable=False),
    sa.Column('taken_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('equity', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('balance', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('unrealized_pnl', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('composition', sa.JSON(), nullable=False),
    sa.CheckConstraint("kind IN ('scheduled', 'manual', 'initial', 'reset')", name=op.f('ck_equity_snapshots_kind')),
    sa.ForeignKeyConstraint(['bot_id'], ['bots.id'], name=op.f('fk_equity_snapshots_bot_id_bots'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_equity_snapshots'))
    )
    op.create_index(op.f('ix_equity_snapshots_bot_id_taken_at'), 'equity_snapshots', ['bot_id', 'taken_at'], unique=False)

    op.create_table('ml_models',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('bot_id', sa.String(length=64), nullable=False),
    sa.Column('strategy', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('trained_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('n_samples', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('artifact', sa.LargeBinary(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('hmac', sa.String(length=64), nullable=False),
    sa.Column('is_champion', sa.Boolean(), nullable=False),
    sa.Column('promoted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('promoted_by', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['bot_id'], ['bots.id'], name=op.f('fk_ml_models_bot_id_bots'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ml_models')),
    sa.UniqueConstraint('bot_id', 'strategy', 'version', name=op.f('uq_ml_models_bot_id_strategy_version'))
    )
    op.create_index(op.f('ix_ml_models_bot_id_strategy_is_champion'), 'ml_models', ['bot_id', 'strategy', 'is_champion'], unique=False)

    op.create_table('performance_snapshots',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('bot_id', sa.String(length=64), nullable=False),
    sa.Column('date', sa.Date(), nullable=False),
    sa.Column('equity', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('daily_pnl', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('total_pnl', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('trades', sa.Integer(), nullable=False),
    sa.Column('wins', sa.Integer(), nullable=False),
    sa.Column('losses', sa.Integer(), nullable=False),
    sa.Column('win_rate', sa.Double(), nullable=False),
    sa.Column('sharpe', sa.Double(), nullable=True),
    sa.Column('max_drawdown', sa.Double(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['bot_id'], ['bots.id'], name=op.f('fk_performance_snapshots_bot_id_bots'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_performance_snapshots')),
    sa.UniqueConstraint('bot_id', 'date', name=op.f('uq_performance_snapshots_bot_id_date'))
    )
    op.create_table('recovery_items',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('bot_id', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('critical', sa.Boolean(), nullable=False),
    sa.Column('dedupe_key', sa.String(length=128), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('decision', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decided_by', sa.BigInteger(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'approved', 'rejected', 'expired')", name=op.f('ck_recovery_items_status')),
    sa.ForeignKeyConstraint(['bot_id'], ['bots.id'], name=op.f('fk_recovery_items_bot_id_bots'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recovery_items'))
    )
    op.create_index(op.f('ix_recovery_items_bot_id_status'), 'recovery_items', ['bot_id', 'status'], unique=False)
    op.create_index(op.f('ix_recovery_items_dedupe_key_status'), 'recovery_items', ['dedupe_key', 'status'], unique=False)

    op.create_table('signals',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('bot_id', sa.String(length=64), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('interval', sa.String(length=8), nullable=False),
    sa.Column('strategy', sa.String(length=32), nullable=False),
    sa.Column('side', sa.String(length=5), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('entry', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('stop_loss', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('take_profit', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('features', sa.JSON(), nullable=False),
    sa.Column('ml_score', sa.Double(), nullable=True),
    sa.Column('ml_ev', sa.Double(), nullable=True),
    sa.Column('model_version', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('trade_id', sa.String(length=40), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("action IN ('EXECUTED', 'REJECTED', 'BLOCKED')", name=op.f('ck_signals_action')),
    sa.CheckConstraint("side IN ('long', 'short')", name=op.f('ck_signals_side')),
    sa.ForeignKeyConstraint(['bot_id'], ['bots.id'], name=op.f('fk_signals_bot_id_bots'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signals'))
    )
    op.create_index(op.f('ix_signals_bot_id_strategy_time'), 'signals', ['bot_id', 'strategy', 'time'], unique=False)
    op.create_index(op.f('ix_signals_bot_id_time'), 'signals', ['bot_id', 'time'], unique=False)
    op.create_index(op.f('ix_signals_created_at'), 'signals', ['created_at'], unique=False)
    op.create_index(op.f('ix_signals_symbol_time'), 'signals', ['symbol', 'time'], unique=False)
    op.create_index(op.f('ix_signals_trade_id'), 'signals', ['trade_id'], unique=False)

    op.create_table('trade_stats_cache',
    sa.Column('bot_id', sa.String(length=64), nullable=False),
    sa.Column('period', sa.String(length=8), nullable=False),
    sa.Column('trades', sa.Integer(), nullable=False),
    sa.Column('wins', sa.Integer(), nullable=False),
    sa.Column('losses', sa.Integer(), nullable=False),
    sa.Column('win_rate', sa.Double(), nullable=False),
    sa.Column('net_pnl', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('profit_factor', sa.Double(), nullable=True),
    sa.Column('figures', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("period IN ('all_time', '7d', '30d')", name=op.f('ck_trade_stats_cache_period')),
    sa.ForeignKeyConstraint(['bot_id'], ['bots.id'], name=op.f('fk_trade_stats_cache_bot_id_bots'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('bot_id', 'period', name=op.f('pk_trade_stats_cache'))
    )
    op.create_table('phantom_trades',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('bot_id', sa.String(length=64), nullable=False),
    sa.Column('signal_id', sa.String(length=40), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('interval', sa.String(length=8), nullable=False),
    sa.Column('strategy', sa.String(length=32), nullable=False),
    sa.Column('side', sa.String(length=5), nullable=False),
    sa.Column('entry', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('stop_loss', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('take_profit', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('outcome', sa.String(length=8), nullable=True),
    sa.Column('exit_reason', sa.String(length=16), nullable=True),
    sa.Column('exit_price', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('exit_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('realized_r', sa.Double(), nullable=True),
    sa.Column('pnl_pct', sa.Double(), nullable=True),
    sa.Column('mfe_r', sa.Double(), nullable=False),
    sa.Column('mae_r', sa.Double(), nullable=False),
    sa.Column('tp1_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('candles_seen', sa.Integer(), nullable=False),
    sa.Column('was_executed', sa.Boolean(), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('ml_score', sa.Double(), nullable=True),
    sa.Column('ml_ev', sa.Double(), nullable=True),
    sa.Column('features', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("outcome IN ('win', 'loss', 'timeout') OR outcome IS NULL", name=op.f('ck_phantom_trades_outcome')),
    sa.CheckConstraint("side IN ('long', 'short')", name=op.f('ck_phantom_trades_side')),
    sa.CheckConstraint("status IN ('active', 'closed')", name=op.f('ck_phantom_trades_status')),
    sa.ForeignKeyConstraint(['bot_id'], ['bots.id'], name=op.f('fk_phantom_trades_bot_id_bots'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['signal_id'], ['signals.id'], name=op.f('fk_phantom_trades_signal_id_signals'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_phantom_trades')),
    sa.UniqueConstraint('signal_id', name=op.f('uq_phantom_trades_signal_id'))
    )
    op.create_index(op.f('ix_phantom_trades_bot_id_status'), 'phantom_trades', ['bot_id', 'status'], unique=False)
    op.create_index(op.f('ix_phantom_trades_bot_id_strategy_exit_time'), 'phantom_trades', ['bot_id', 'strategy', 'exit_time'], unique=False)
    op.create_index(op.f('ix_phantom_trades_symbol_status'), 'phantom_trades', ['symbol', 'status'], unique=False)

    op.create_table('trades',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('bot_id', sa.String(length=64), nullable=False),
    sa.Column('signal_id', sa.String(length=40), nullable=True),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('strategy', sa.String(length=32), nullable=True),
    sa.Column('side', sa.String(length=5), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('mode', sa.String(length=8), nullable=False),
    sa.Column('qty', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('leverage', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('entry_price', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('entry_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stop_loss', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('take_profit', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('exit_price', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('exit_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('exit_reason', sa.String(length=16), nullable=True),
    sa.Column('fees', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('gross_pnl', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('net_pnl', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('pnl_pct', sa.Double(), nullable=True),
    sa.Column('realized_r', sa.Double(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("exit_reason IN ('tp', 'sl', 'trailing', 'manual', 'reconciled', 'liquidation', 'timeout', 'gap') OR exit_reason IS NULL", name=op.f('ck_trades_exit_reason')),
    sa.CheckConstraint("mode IN ('paper', 'live', 'replay')", name=op.f('ck_trades_mode')),
    sa.CheckConstraint("side IN ('long', 'short')", name=op.f('ck_trades_side')),
    sa.CheckConstraint("status IN ('open', 'closed', 'cancelled')", name=op.f('ck_trades_status')),
    sa.ForeignKeyConstraint(['bot_id'], ['bots.id'], name=op.f('fk_trades_bot_id_bots'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trades')),
    sa.UniqueConstraint('signal_id', name=op.f('uq_trades_signal_id'))
    )
    op.create_index(op.f('ix_trades_bot_id_exit_time'), 'trades', ['bot_id', 'exit_time'], unique=False)
    op.create_index(op.f('ix_trades_bot_id_status'), 'trades', ['bot_id', 'status'], unique=False)
    op.create_index(op.f('ix_trades_symbol_status'), 'trades', ['symbol', 'status'], unique=False)

    op.create_table('orders',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('order_link_id', sa.String(length=36), nullable=False),
    sa.Column('bot_id', sa.String(length=64), nullable=False),
    sa.Column('trade_id', sa.String(length=40), nullable=True),
    sa.Column('exchange_order_id', sa.String(length=64), nullable=True),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('side', sa.String(length=4), nullable=False),
    sa.Column('order_type', sa.String(length=16), nullable=False),
    sa.Column('qty', sa.Numeric(precision=28, scale=10), nullable=False),
    sa.Column('price', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('reduce_only', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('filled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('filled_qty', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('avg_price', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.Column('fee', sa.Numeric(precision=28, scale=10), nullable=True),
    sa.CheckConstraint("side IN ('Buy', 'Sell')", name=op.f('ck_orders_side')),
    sa.ForeignKeyConstraint(['bot_id'], ['bots.id'], name=op.f('fk_orders_bot_id_bots'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['trade_id'], ['trades.id'], name=op.f('fk_orders_trade_id_trades'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
    sa.UniqueConstraint('order_link_id', name=op.f('uq_orders_order_link_id'))
    )
    op.create_index(op.f('ix_orders_bot_id_status'), 'orders', ['bot_id', 'status'], unique=False)
    op.create_index(op.f('ix_orders_exchange_order_id'), 'orders', ['exchange_order_id'], unique=False)
    op.create_index(op.f('ix_orders_trade_id'), 'orders', ['trade_id'], unique=False)


    op.execute(BOT_STATUS_VIEW)
    op.execute(BOT_PERFORMANCE_SUMMARY)
    op.execute(RECENT_SIGNALS[op.get_bind().dialect.name])

def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.drop_index(op.f('ix_orders_trade_id'), table_name='orders')
    op.drop_index(op.f('ix_orders_exchange_order_id'), table_name='orders')
    op.drop_index(op.f('ix_orders_bot_id_status'), table_name='orders')

    op.drop_table('orders')
    op.drop_index(op.f('ix_trades_symbol_status'), table_name='trades')
    op.drop_index(op.f('ix_trades_bot_id_status'), table_name='trades')
    op.drop_index(op.f('ix_trades_bot_id_exit_time'), table_name='trades')

    op.drop_table('trades')
    op.drop_index(op.f('ix_phantom_trades_symbol_status'), table_name='phantom_trades')
    op.drop_index(op.f('ix_phantom_trades_bot_id_strategy_exit_time'), table_name='phantom_trades')
    op.drop_index(op.f('ix_phantom_trades_bot_id_status'), table_name='phantom_trades')

    op.drop_table('phantom_trades')
    op.drop_table('trade_stats_cache')
    op.drop_index(op.f('ix_signals_trade_id'), table_name='signals')
    op.drop_index(op.f('ix_signals_symbol_time'), table_name='signals')
    op.drop_index(op.f('ix_signals_created_at'), table_name='signals')
    op.drop_index(op.f('ix_signals_bot_id_time'), table_name='signals')
    op.drop_index(op.f('ix_signals_bot_id_strategy_time'), table_name='signals')

    op.drop_table('signals')
    op.drop_index(op.f('ix_recovery_items_dedupe_key_status'), table_name='recovery_items')
    op.drop_index(op.f('ix_recovery_items_bot_id_status'), table_name='recovery_items')

    op.drop_table('recovery_items')
    op.drop_table('performance_snapshots')
    op.drop_index(op.f('ix_ml_models_bot_id_strategy_is_champion'), table_name='ml_models')

    op.drop_table('ml_models')
    op.drop_index(op.f('ix_equity_snapshots_bot_id_taken_at'), table_name='equity_snapshots')

    op.drop_table('equity_snapshots')
    op.drop_index(op.f('ix_bot_states_bot_id_taken_at'), table_name='bot_states')

    op.drop_table('bot_states')
    op.drop_index(op.f('ix_job_runs_job_id_started_at'), table_name='job_runs')

    op.drop_table('job_runs')
    op.drop_table('candles')
    op.drop_table('bots')
    op.drop_index(op.f('ix_audit_log_bot_id_at'), table_name='audit_log')
    op.drop_index(op.f('ix_audit_log_at'), table_name='audit_log')

    op.drop_table('audit_log')
