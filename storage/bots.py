"""Bot rows: configuration in, BotConfig out, status changes (pause/resume/halt) that survive restarts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.config import BotConfig
from storage.models import Bot

# BotConfig fields without a column of their own live in bots.config (JSON)
IN_CONFIG_JSON = ("win_rate_floor", "breaker_min_outcomes", "loss_cooldown_minutes", "slippage_bps", "taker_fee_pct",
                  "min_level_ticks", "min_reward_r", "margin_mode", "entry_order", "entry_timeout_s", "entry_fallback",
                  "fallback_max_move_bps", "maker_fee_pct", "universe", "extra")


def _columns(config: BotConfig) -> dict[str, Any]:
    return {
        "name": config.name, "symbols": list(config.symbols), "intervals": list(config.intervals),
        "strategies": config.strategy_settings(), "capital": config.capital,
        "risk_pct": config.risk_pct, "risk_usd": config.risk_usd, "max_leverage": config.max_leverage,
        "max_positions": config.max_positions, "max_position_notional": config.max_position_notional,
        "trailing_stop_pct": config.trailing_stop_pct, "breakeven_at_r": config.breakeven_at_r,
        "phantom_timeout_candles": config.phantom_timeout_candles, "drawdown_guard_pct": config.drawdown_guard_pct,
        "daily_loss_limit_pct": config.daily_loss_limit_pct, "ml_threshold": config.ml_threshold,
        "ml_min_p": config.ml_min_p, "mode": config.mode,
        "config": config.model_dump(mode="json", include=set(IN_CONFIG_JSON)),
    }


def config_of(row: Bot) -> BotConfig:
    """The stored configuration. A strategy this process cannot run (its file is gone or broken, its
    parameters no longer fit its model) is set aside, not an error: see BotConfig.unloaded."""
    slow, fast = row.intervals
    return BotConfig.model_validate(dict(
        id=row.id, name=row.name, symbols=row.symbols, slow_interval=slow, fast_interval=fast,
        strategies=row.strategies, capital=row.capital, risk_pct=row.risk_pct, risk_usd=row.risk_usd,
        max_leverage=row.max_leverage, max_positions=row.max_positions,
        max_position_notional=row.max_position_notional, trailing_stop_pct=row.trailing_stop_pct,
        breakeven_at_r=row.breakeven_at_r, phantom_timeout_candles=row.phantom_timeout_candles,
        drawdown_guard_pct=row.drawdown_guard_pct, daily_loss_limit_pct=row.daily_loss_limit_pct,
        ml_threshold=row.ml_threshold, ml_min_p=row.ml_min_p, mode=row.mode,
        **(row.config or {}),
    ), context={"stored": True})


async def upsert_bot(session: AsyncSession, config: BotConfig, now: datetime | None = None) -> Bot:
    """Create the bot or update its configuration; its status (paused/halted) is left as it is."""
    now = now or datetime.now(UTC)
    row = await session.get(Bot, config.id)
    if row is None:
        row = Bot(id=config.id, status="running", created_at=now, updated_at=now, **_columns(config))
        session.add(row)
    else:
        for key, value in _columns(config).items():
            setattr(row, key, value)
        row.updated_at = now
    await session.flush()
    return row


async def load_bot(session: AsyncSession, bot_id: str) -> BotConfig | None:
    row = await session.get(Bot, bot_id)
    return None if row is None else config_of(row)


async def list_bots(session: AsyncSession) -> list[Bot]:
    return list((await session.scalars(select(Bot).order_by(Bot.id))).all())


async def set_status(session: AsyncSession, bot_id: str, status: str, reason: str | None,
                     now: datetime | None = None) -> bool:
    """Set a bot's status; `status_since` moves only when the status itself changes."""
    now = now or datetime.now(UTC)
    row = await session.get(Bot, bot_id)
    if row is None:
        return False
    since = row.status_since if row.status == status and row.status_since is not None else now
    done = await session.execute(update(Bot).where(Bot.id == bot_id).values(
        status=status, status_reason=reason, status_since=since, updated_at=now))
    return (done.rowcount or 0) > 0  # type: ignore[attr-defined]
