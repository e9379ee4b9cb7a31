"""The backtest report's pure figures at their edges (the replay's e2e tests recompute them on real data)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from core.report import (
    Halt,
    Heading,
    Period,
    Table,
    funding_note,
    halted_share,
    reason_kind,
    render_markdown,
    render_text,
    signal_reasons,
)
from core.stats import TradeFacts, buy_and_hold, calmar, daily_returns, monthly_returns, worst_drawdown

T0 = datetime(2020, 12, 30, tzinfo=UTC)


def _trade(i: int, days: float, pnl: str) -> TradeFacts:
    at = T0 + timedelta(days=days)
    return TradeFacts(f"t{i}", "BTCUSDT", "scalp", at - timedelta(hours=1), at, Decimal(pnl))


def test_worst_drawdown_dates() -> None:
    curve = [(T0, 10_100.0), (T0 + timedelta(days=1), 9_600.0), (T0 + timedelta(days=2), 10_200.0)]
    dd = worst_drawdown(curve, 10_000.0, T0 - timedelta(days=1))
    assert dd is not None and dd.usd == 500 and dd.peak_at == T0 and dd.trough_at == T0 + timedelta(days=1)
    assert dd.recovered_at == T0 + timedelta(days=2)
    first_loses = worst_drawdown([(T0, 9_000.0), (T0 + timedelta(days=1), 9_500.0)], 10_000.0, T0 - timedelta(days=1))
    assert first_loses is not None and first_loses.peak_at == T0 - timedelta(days=1)  # the start's capital
    assert first_loses.recovered_at is None and first_loses.pct == 10
    assert worst_drawdown([(T0, 10_500.0)], 10_000.0, T0) is None


def test_monthly_and_daily_returns_over_a_span() -> None:
    trades = [_trade(0, 0, "100"), _trade(1, 3, "-202")]  # 2020-12-30, 2021-01-02
    months = monthly_returns(trades, Decimal(10_000), (date(2020, 11, 15), date(2021, 2, 1)))
    assert [(m.month, m.trades, m.net_pnl) for m in months] == [
        ("2020-11", 0, 0.0), ("2020-12", 1, 100.0), ("2021-01", 1, -202.0), ("2021-02", 0, 0.0)]
    assert months[2].ret == -202 / 10_100
    returns = daily_returns(trades, Decimal(10_000), (date(2020, 12, 29), date(2021, 1, 3)))
    assert len(returns) == 6 and returns[1] == 0.01 and returns[4] == -0.02 and returns[0] == returns[5] == 0


def test_calmar_and_buy_and_hold() -> None:
    assert calmar([0.01], 5.0) is None and calmar([0.01, 0.0], 0.0) is None
    ratio = calmar([0.01, 0.0], 10.0)
    assert ratio is not None and abs(ratio - (1.01 ** (365 / 2) - 1) / 0.1) < 1e-9
    bh = buy_and_hold({"A": (10.0, 20.0), "B": (4.0, 3.0)}, Decimal(1000))
    assert bh is not None and bh.ret == 0.375 and bh.pnl == 375 and bh.by_symbol == {"A": 1.0, "B": -0.25}
    assert buy_and_hold({}, Decimal(1000)) is None


def test_period_and_halted_share() -> None:
    period = Period(T0, T0 + timedelta(days=10))  # ends at midnight: the 10th day is not in it
    assert period.span == (T0.date(), T0.date() + timedelta(days=9)) and period.days == 10
    halts = [Halt(T0 + timedelta(days=1), "x", T0 + timedelta(days=2)), Halt(T0 + timedelta(days=9), "y")]
    assert halted_share(halts, period) == 0.2
    assert Halt.from_json(halts[0].as_json()) == halts[0] and Halt.from_json(halts[1].as_json()) == halts[1]


def test_signal_reasons_blank_the_figures() -> None:
    assert reason_kind("daily loss limit: 6.64% lost today (limit 5%)") == "daily loss limit: …% lost today (limit …%)"
    assert reason_kind("ev -0.12 < +0.05") == "ev … < …" and reason_kind(None) == "(none)"
    rows = [("BLOCKED", "bot halted: drawdown 20.1%", 3), ("BLOCKED", "bot halted: drawdown 21.0%", 4),
            ("BLOCKED", "a BTCUSDT position is already open", 5), ("EXECUTED", None, 2)]
    got = signal_reasons(rows, top=1)
    assert got == {"executed": [{"reason": "(none)", "count": 2}], "rejected": [],
                   "blocked": [{"reason": "bot halted: drawdown …%", "count": 7}]}


def test_funding_note_never_silent() -> None:
    assert funding_note(["A", "B"], None) == funding_note(["A", "B"], ["A", "B"]) == \
        "funding not modelled for A, B (no funding-rate data: their PnL carries no funding)"
    assert funding_note(["A", "B"], []) == "funding: every symbol replayed with its funding-rate series"
    assert funding_note(["A", "B"], ["B"]).startswith("funding not modelled for B (")
    assert "every symbol" in funding_note(["A"], [])


def test_text_and_markdown_from_the_same_blocks() -> None:
    blocks = [Heading("t"), "a line", Table("halts", ("when", "reason", "n"), [("x", "why", "12")], 2)]
    assert render_text(blocks) == ["== t ==", "a line", "", "halts", "  when  reason   n", "  x     why     12"]
    md = render_markdown(blocks)
    assert md.startswith("# t\n\na line  \n") and "| when | reason | n |\n|---|---|---:|\n| x | why | 12 |" in md
