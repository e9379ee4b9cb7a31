"""Snapshots: bot state (for restarts and forensics), equity (scheduled/manual/initial/reset), and one
performance row per bot and UTC day (unique: a re-run of the daily job updates, never duplicates)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from core.stats import TradeFacts, summarize
from core.trader import Trader
from storage.db import dialect_insert, session_factory
from storage.models import AuditLog, BotState, EquitySnapshot, JobRun, PerformanceSnapshot


class Snapshots:
    def __init__(self, db: AsyncEngine) -> None:
        self.sessions = session_factory(db)

    async def state(self, bot_id: str, trader: Trader, counters: dict[str, Any], now: datetime,
                    kind: str = "scheduled") -> None:
        s = trader.state
        positions = [{"trade_id": t.record.id, "symbol": t.record.symbol, "side": t.record.side,
                      "qty": str(t.record.qty), "entry": str(t.record.entry_price), "status": t.status,
                      "stop_loss": str(t.record.stop_loss), "take_profit": str(t.record.take_profit)}
                     for t in trader.trades.values()]
        trailing = {t.record.id: str(t.record.stop_loss) for t in trader.trades.values() if t.stop_moved}
        async with self.sessions.begin() as session:
            session.add(BotState(bot_id=bot_id, taken_at=now, kind=kind, equity=trader.equity(),
                                 peak_equity=s.peak_equity, drawdown_pct=float(s.drawdown_pct), halted=s.halted,
                                 halt_reason=s.halt_reason, open_positions=positions, trailing_stops=trailing,
                                 counters=dict(counters)))

    async def equity(self, bot_id: str, kind: str, equity: Decimal, balance: Decimal, unrealized: Decimal,
                     now: datetime, composition: dict[str, Any] | None = None) -> None:
        async with self.sessions.begin() as session:
            session.add(EquitySnapshot(bot_id=bot_id, taken_at=now, kind=kind, equity=equity, balance=balance,
                                       unrealized_pnl=unrealized, composition=composition or {}))

    async def performance(self, bot_id: str, day: date, facts: list[TradeFacts], capital: Decimal,
                          equity: Decimal, now: datetime) -> None:
        """The row of one UTC day: that day's trades, the totals up to it (upsert on (bot_id, date))."""
        upto = [f for f in facts if f.exit_time.date() <= day]
        that_day = [f for f in upto if f.exit_time.date() == day]
        total, daily = summarize(upto, capital), summarize(that_day, capital)
        row = {"bot_id": bot_id, "date": day, "equity": equity, "daily_pnl": Decimal(repr(daily["net_pnl"])),
               "total_pnl": Decimal(repr(total["net_pnl"])), "trades": daily["trades"], "wins": daily["wins"],
               "losses": daily["losses"], "win_rate": daily["win_rate"] or 0.0, "sharpe": total["sharpe"],
               "max_drawdown": total["max_drawdown_pct"], "created_at": now}
        async with self.sessions.begin() as session:
            stmt = dialect_insert(session)(PerformanceSnapshot).values(row)
            await session.execute(stmt.on_conflict_do_update(
                index_elements=["bot_id", "date"],
                set_={k: stmt.excluded[k] for k in row if k not in ("bot_id", "date")}))

    async def prune(self, now: datetime, keep_days: int = 90) -> dict[str, int]:
        """Metrics retention: job runs, audit entries, scheduled state snapshots older than keep_days."""
        cutoff = now - timedelta(days=keep_days)
        out = {}
        async with self.sessions.begin() as session:
            for name, stmt in (
                ("job_runs", delete(JobRun).where(JobRun.started_at < cutoff)),
                ("audit_log", delete(AuditLog).where(AuditLog.at < cutoff)),
                ("bot_states", delete(BotState).where(BotState.taken_at < cutoff, BotState.kind == "scheduled")),
                ("equity_snapshots", delete(EquitySnapshot).where(EquitySnapshot.taken_at < cutoff,
                                                                  EquitySnapshot.kind == "scheduled")),
            ):
                out[name] = int((await session.execute(stmt)).rowcount or 0)  # type: ignore[attr-defined]
        return out
