"""A replay over the real data trades; its figures equal an independent recomputation from the trades
table, and the ledger is consistent (orders, signal links, stats cache)."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

from tests.conftest import CANDLES
from tests.hostproc import desk_env, run


def test_replay_stats_match_the_trades_table(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    done = run(["replay", "--data", str(CANDLES / "binance_spot_2020-12_2021-07"), "--to", "2021-03-20", "--no-ml",
                "--db", f"sqlite:///{db}", "--json"], tmp_path, desk_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, CAST(net_pnl AS TEXT), CAST(fees AS TEXT), exit_time, exit_reason, signal_id, qty, "
                       "entry_price, exit_price, side FROM trades WHERE bot_id='replay' AND status='closed' "
                       "ORDER BY exit_time, id").fetchall()
    assert len(rows) == doc["trades_closed"] > 20
    pnl = [float(r[1]) for r in rows]
    wins = [p for p in pnl if p > 0]
    losses = [p for p in pnl if p <= 0]
    assert abs(doc["win_rate"] - len(wins) / len(rows)) < 1e-4
    assert abs(doc["profit_factor"] - sum(wins) / -sum(losses)) < 1e-4
    assert abs(doc["net_pnl"] - sum(pnl)) < 0.01
    assert abs(doc["fees"] - sum(float(r[2]) for r in rows)) < 0.01
    equity, peak, worst = 10_000.0, 10_000.0, 0.0
    for p in pnl:
        equity += p
        peak = max(peak, equity)
        worst = max(worst, peak - equity)
    assert abs(doc["max_drawdown"] - worst) < 0.01
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r[4]] = reasons.get(r[4], 0) + 1
    assert doc["exit_reasons"] == reasons
    for r in rows:  # net = (exit - entry) x qty x direction - fees, exactly
        direction = 1 if r[9] == "long" else -1
        gross = (Decimal(str(r[8])) - Decimal(str(r[7]))) * Decimal(str(r[6])) * direction
        assert abs(gross - Decimal(r[2]) - Decimal(r[1])) < Decimal("0.000001")
    # every closed trade has its entry and exit orders, and its signal points back at it
    orders = dict(con.execute("SELECT trade_id, count(*) FROM orders GROUP BY trade_id").fetchall())
    assert all(orders.get(r[0]) == 2 for r in rows)
    linked = con.execute("SELECT count(*) FROM signals s JOIN trades t ON t.signal_id = s.id AND s.trade_id = t.id "
                         "WHERE t.status = 'closed'").fetchone()[0]
    assert linked == len(rows)
    cache = con.execute("SELECT trades, wins, CAST(net_pnl AS TEXT) FROM trade_stats_cache "
                        "WHERE bot_id='replay' AND period='all_time'").fetchone()
    assert cache[0] == len(rows) and cache[1] == len(wins) and abs(float(cache[2]) - sum(pnl)) < 0.01
