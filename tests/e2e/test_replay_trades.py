"""A replay over the real data trades; its figures equal an independent recomputation from the trades
table (and the candle files, the signals table), the ledger is consistent (orders, signal links, stats
cache), `--out` writes the report, the trades and the equity picture, and on the shared data the report
says that the drawdown guard halted the bot and for how long."""

from __future__ import annotations

import csv
import json
import math
import re
import sqlite3
import statistics
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CANDLES
from tests.hostproc import desk_env, run

DATA = CANDLES / "binance_spot_2020-12_2021-07"
CAPITAL = 10_000.0
TRADE_COLUMNS = ("id, signal_id, symbol, strategy, side, qty, leverage, entry_time, entry_price, stop_loss, "
                 "take_profit, exit_time, exit_price, exit_reason, fees, funding, gross_pnl, net_pnl, pnl_pct, "
                 "realized_r")


def _replay(tmp_path: Path, db: Path, *args: str) -> dict[str, Any]:
    done = run(["replay", "--data", str(DATA), "--db", f"sqlite:///{db}", "--json", *args], tmp_path, desk_env(),
               timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ETA" not in done.stderr  # no progress bar when stderr is not a terminal
    return json.loads(done.stdout.strip().splitlines()[-1])


def _t(text: str) -> datetime:
    """A time as SQLite or the JSON holds it, aware UTC."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _trades(con: sqlite3.Connection) -> list[dict[str, Any]]:
    cols = [c.strip() for c in TRADE_COLUMNS.split(",")]
    casted = ", ".join(f"CAST({c} AS TEXT)" for c in cols)
    rows = con.execute(f"SELECT {casted} FROM trades WHERE bot_id='replay' AND status='closed' "
                       "ORDER BY exit_time, id").fetchall()
    return [dict(zip(cols, r, strict=True)) for r in rows]


def _period(start: datetime | None, end: datetime) -> tuple[datetime, datetime, dict[str, tuple[float, float]]]:
    """First open and last close of the replayed 15m/5m candles, and each symbol's first and last 15m close."""
    first, last, closes = None, None, {}
    lo = -math.inf if start is None else start.timestamp() * 1000
    for path in sorted(DATA.glob("*_binance.csv")):
        symbol, interval = path.name.split("_")[0].replace("-", ""), path.name.split("_")[1]
        if interval not in ("15m", "5m"):
            continue
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if lo <= int(r["timestamp_ms"]) < end.timestamp() * 1000]
        step = 15 if interval == "15m" else 5
        t0 = int(rows[0]["timestamp_ms"])
        t1 = int(rows[-1]["timestamp_ms"]) + step * 60_000
        first = t0 if first is None else min(first, t0)
        last = t1 if last is None else max(last, t1)
        if interval == "15m":
            closes[symbol] = (float(rows[0]["close"]), float(rows[-1]["close"]))
    assert first is not None and last is not None
    return datetime.fromtimestamp(first / 1000, UTC), datetime.fromtimestamp(last / 1000, UTC), closes


def _group(trades: list[dict[str, Any]]) -> dict[str, Any]:
    pnl = [float(t["net_pnl"]) for t in trades]
    wins, losses = [p for p in pnl if p > 0], [p for p in pnl if p <= 0]
    rs = [float(t["realized_r"]) for t in trades if t["realized_r"] is not None]
    hours = [(_t(t["exit_time"]) - _t(t["entry_time"])).total_seconds() / 3600 for t in trades]
    return {"trades": len(trades), "win_rate": len(wins) / len(trades),
            "profit_factor": sum(wins) / -sum(losses) if losses and sum(losses) < 0 else None,
            "expectancy_r": statistics.fmean(rs) if rs else None, "net_pnl": sum(pnl),
            "fees": sum(float(t["fees"]) for t in trades), "funding": sum(float(t["funding"]) for t in trades),
            "avg_holding_h": statistics.fmean(hours)}


def _close(a: float | None, b: float | None, tol: float) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= tol)


def _same_groups(doc: dict[str, Any], trades: list[dict[str, Any]], key: str) -> None:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in trades:
        groups[t[key]].append(t)
    assert set(doc) == set(groups)
    for name, rows in groups.items():
        want, got = _group(rows), doc[name]
        assert got["trades"] == want["trades"], name
        for k, tol in (("win_rate", 1e-4), ("profit_factor", 1e-4), ("expectancy_r", 1e-4), ("net_pnl", 0.01),
                       ("fees", 0.01), ("funding", 0.01), ("avg_holding_h", 0.01)):
            assert _close(got[k], want[k], tol), (name, k, got[k], want[k])


def test_replay_figures_match_the_trades_table(tmp_path: Path) -> None:
    """--on-halt resume over 3.5 months: many trades, several halts, every figure recomputed here."""
    db, out = tmp_path / "r.db", tmp_path / "out"
    end = datetime(2021, 3, 20, tzinfo=UTC)
    doc = _replay(tmp_path, db, "--to", "2021-03-20", "--no-ml", "--on-halt", "resume", "--out", str(out))
    con = sqlite3.connect(db)
    trades = _trades(con)
    assert len(trades) == doc["trades_closed"] > 100
    pnl = [float(t["net_pnl"]) for t in trades]
    whole = _group(trades)
    for k, tol in (("win_rate", 1e-4), ("profit_factor", 1e-4), ("expectancy_r", 1e-4), ("net_pnl", 0.01),
                   ("fees", 0.01), ("funding", 0.01), ("avg_holding_h", 0.01)):
        assert _close(doc[k], whole[k], tol), (k, doc[k], whole[k])
    _same_groups(doc["by_symbol"], trades, "symbol")
    _same_groups(doc["by_strategy"], trades, "strategy")
    assert doc["start_balance"] == CAPITAL and abs(doc["end_balance"] - CAPITAL - sum(pnl)) < 0.01

    # the period (first open to last close of the replayed candles) and buy-and-hold, from the candle files
    first, last, closes = _period(None, end)
    assert (_t(doc["period"]["start"]), _t(doc["period"]["end"])) == (first, last)
    days = [first.date() + timedelta(days=i) for i in range(((last - timedelta(microseconds=1)).date()
                                                              - first.date()).days + 1)]
    assert doc["period"]["days"] == doc["ratio_days"] == len(days) and doc["ratios_reliable"]
    hold = statistics.fmean(b / a - 1 for a, b in closes.values())
    assert abs(doc["buy_and_hold"]["return_pct"] - hold * 100) < 0.01
    assert abs(doc["buy_and_hold"]["pnl"] - hold * CAPITAL) < 0.01
    assert doc["buy_and_hold"]["symbols"].keys() == closes.keys()

    # drawdown, with its dates: the largest fall of the equity curve from its running peak
    equity, peak, peak_at, worst, worst_pct = CAPITAL, CAPITAL, first, 0.0, 0.0
    episode: tuple[datetime, datetime, float] | None = None
    curve = []
    for t in trades:
        equity += float(t["net_pnl"])
        at = _t(t["exit_time"])
        curve.append((at, equity))
        if equity > peak:
            peak, peak_at = equity, at
        if peak - equity > worst:
            worst, episode = peak - equity, (peak_at, at, peak)
        worst_pct = max(worst_pct, (peak - equity) / peak * 100)
    assert episode is not None
    assert abs(doc["max_drawdown"] - worst) < 0.01 and abs(doc["max_drawdown_pct"] - worst_pct) < 0.01
    assert _t(doc["max_drawdown_peak_at"]) == episode[0] and _t(doc["max_drawdown_trough_at"]) == episode[1]
    back = next((at for at, e in curve if at > episode[1] and e >= episode[2]), None)
    assert doc["max_drawdown_recovered_at"] == (back.isoformat() if back else None)

    # daily returns over every day of the period -> Sharpe, Sortino, Calmar; monthly returns
    by_day: dict[date, float] = defaultdict(float)
    by_month: dict[str, list[float]] = defaultdict(list)
    for t in trades:
        by_day[_t(t["exit_time"]).date()] += float(t["net_pnl"])
        by_month[_t(t["exit_time"]).strftime("%Y-%m")].append(float(t["net_pnl"]))
    returns, equity = [], CAPITAL
    for day in days:
        returns.append(by_day.get(day, 0.0) / equity)
        equity += by_day.get(day, 0.0)
    mean = statistics.fmean(returns)
    assert abs(doc["sharpe"] - mean / statistics.pstdev(returns) * math.sqrt(365)) < 1e-3
    downside = math.sqrt(sum(r * r for r in returns if r < 0) / len(returns))
    assert abs(doc["sortino"] - mean / downside * math.sqrt(365)) < 1e-3
    annual = ((CAPITAL + sum(pnl)) / CAPITAL) ** (365 / len(days)) - 1
    assert abs(doc["calmar"] - annual / (worst_pct / 100)) < 1e-3
    months, equity = [], CAPITAL
    for month in sorted({d.strftime("%Y-%m") for d in days}):
        p = sum(by_month.get(month, []))
        months.append({"month": month, "trades": len(by_month.get(month, [])), "net_pnl": round(p, 2),
                       "return_pct": round(p / equity * 100, 2)})
        equity += p
    assert [m["month"] for m in doc["monthly"]] == [m["month"] for m in months]
    for got, want in zip(doc["monthly"], months, strict=True):
        assert got["trades"] == want["trades"]
        assert abs(got["net_pnl"] - want["net_pnl"]) <= 0.011 and abs(got["return_pct"] - want["return_pct"]) <= 0.011

    # halts: each is the time of the first signal the guard blocked with its reason; resumed 24 h later
    assert len(doc["halts"]) >= 2 and doc["on_halt"] == "resume" and doc["resume_after_h"] == 24
    halted = 0.0
    for h in doc["halts"]:
        at = _t(h["at"])
        first_blocked = con.execute("SELECT min(time) FROM signals WHERE bot_id='replay' AND reason = ?",
                                    ("bot halted: " + h["reason"],)).fetchone()[0]
        assert _t(first_blocked) == at
        resumed = _t(h["resumed_at"]) if h["resumed_at"] else last
        assert h["resumed_at"] is None or timedelta(hours=24) <= resumed - at < timedelta(hours=24, minutes=5)
        halted += (min(resumed, last) - at).total_seconds()
    assert abs(doc["halted_share"] - halted / (last - first).total_seconds()) < 1e-4
    assert [r["trades"] for r in doc["monthly"]] and all(m["trades"] > 0 for m in doc["monthly"])

    # signals by outcome: counts per outcome add up to the signals table, the reasons' figures blanked
    rows = con.execute("SELECT action, reason, count(*) FROM signals WHERE bot_id='replay' "
                       "GROUP BY action, reason").fetchall()
    for outcome in ("executed", "rejected", "blocked"):
        total = sum(n for a, _, n in rows if a == outcome.upper())
        assert doc[outcome] == total
        kinds: dict[str, int] = defaultdict(int)
        for a, reason, n in rows:
            if a == outcome.upper():
                kinds[re.sub(r"[+-]?\d+(?:\.\d+)?", "…", reason or "(none)")] += n
        top = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        assert [(r["reason"], r["count"]) for r in doc["signal_reasons"][outcome]] == top
    assert any(r["reason"].startswith("bot halted") for r in doc["signal_reasons"]["blocked"])
    assert doc["funding_missing"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    assert doc["funding_note"].startswith("funding not modelled for BTCUSDT, ETHUSDT, SOLUSDT, XRPUSDT")

    # --out: the report as Markdown, the trades as CSV (the trades table's rows), the equity curve as PNG
    report = (out / "report.md").read_text()
    assert report.startswith("# phantomdesk replay") and "funding not modelled" in report
    assert "| pair | trades |" in report and "| month |" in report and f"HALTED {len(doc['halts'])} time" in report
    for h in doc["halts"]:
        assert f"| {_t(h['at']):%Y-%m-%d %H:%M} |" in report
    with (out / "trades.csv").open() as f:
        exported = list(csv.DictReader(f))
    assert [r["id"] for r in exported] == [t["id"] for t in trades]
    for row, t in zip(exported, trades, strict=True):
        for k, v in t.items():
            if k.endswith("_time"):
                assert _t(row[k]) == _t(v), k
            elif k in ("pnl_pct", "realized_r"):
                assert (row[k] == "") == (v is None) and (v is None or float(row[k]) == pytest.approx(float(v))), k
            elif v is not None and re.fullmatch(r"-?[\d.]+(E-?\d+)?", v):
                assert Decimal(row[k]) == Decimal(v), k
            else:
                assert row[k] == (v or ""), k
    assert (out / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the ledger: net = gross - fees, orders and signal links, the stats cache
    for r in trades:
        direction = 1 if r["side"] == "long" else -1
        gross = (Decimal(r["exit_price"]) - Decimal(r["entry_price"])) * Decimal(r["qty"]) * direction
        assert abs(gross - Decimal(r["fees"]) + Decimal(r["funding"]) - Decimal(r["net_pnl"])) < Decimal("0.000001")
    orders = dict(con.execute("SELECT trade_id, count(*) FROM orders GROUP BY trade_id").fetchall())
    assert all(orders.get(r["id"]) == 2 for r in trades)
    linked = con.execute("SELECT count(*) FROM signals s JOIN trades t ON t.signal_id = s.id AND s.trade_id = t.id "
                         "WHERE t.status = 'closed'").fetchone()[0]
    assert linked == len(trades)
    cache = con.execute("SELECT trades, wins, CAST(net_pnl AS TEXT) FROM trade_stats_cache "
                        "WHERE bot_id='replay' AND period='all_time'").fetchone()
    assert cache[0] == len(trades) and cache[1] == sum(p > 0 for p in pnl) and abs(float(cache[2]) - sum(pnl)) < 0.01
    reasons: dict[str, int] = defaultdict(int)
    for r in trades:
        reasons[r["exit_reason"]] += 1
    assert doc["exit_reasons"] == reasons


def test_the_report_says_the_bot_was_halted_and_for_how_long(tmp_path: Path) -> None:
    """The whole shared data set, default --on-halt stop: the guard halts the bot within its first weeks (with
    today's rules, 2021-01; the ML filter in force, 2020-12) and it trades no more; the report says when, why,
    and for what share of the period."""
    out = tmp_path / "out"
    doc = _replay(tmp_path, tmp_path / "stop.db", "--no-ml", "--out", str(out))
    assert doc["on_halt"] == "stop" and len(doc["halts"]) == 1
    halt = doc["halts"][0]
    start, end = _t(doc["period"]["start"]), _t(doc["period"]["end"])
    at = _t(halt["at"])
    assert at.date() < date(2021, 2, 1) and halt["resumed_at"] is None and "drawdown" in halt["reason"]
    share = (end - at) / (end - start)
    assert share > 0.75 and abs(doc["halted_share"] - share) < 1e-4
    assert doc["signal_reasons"]["blocked"][0]["reason"].startswith("bot halted")
    report = (out / "report.md").read_text()
    assert f"HALTED on {at:%Y-%m-%d %H:%M} UTC and never resumed" in report
    assert f"{share * 100:.1f}% of the period halted" in report
    assert all(m["trades"] == 0 for m in doc["monthly"] if m["month"] > f"{at:%Y-%m}")  # nothing after the halt


def test_on_halt_resume_trades_through_the_whole_period(tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = _replay(tmp_path, tmp_path / "resume.db", "--no-ml", "--on-halt", "resume", "--out", str(out))
    halts = doc["halts"]
    assert len(halts) >= 2 and halts[0]["at"] < "2021-02"
    end = _t(doc["period"]["end"])
    for h in halts:  # each resumed 24 h of candle time later (unless that lies past the end)
        assert h["resumed_at"] is not None or _t(h["at"]) + timedelta(hours=24) > end
    con = sqlite3.connect(tmp_path / "resume.db")
    last_exit = _t(con.execute("SELECT max(exit_time) FROM trades WHERE bot_id='replay'").fetchone()[0])
    assert last_exit > end - timedelta(days=30)
    assert all(m["trades"] > 0 for m in doc["monthly"])
    report = (out / "report.md").read_text()
    for h in halts:
        resumed = f"{_t(h['resumed_at']):%Y-%m-%d %H:%M}" if h["resumed_at"] else "not resumed"
        assert f"| {_t(h['at']):%Y-%m-%d %H:%M} | {h['reason']} | {resumed} |" in report
