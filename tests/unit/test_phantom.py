"""Hand-checked phantom lifecycles: TP, SL, both in one candle, timeout, gap, gaps through levels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.market.candle import Candle
from core.phantom import PhantomBook, PhantomStats, phantom_digest
from core.signal import Signal

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)  # the signal candle's close
STEP = timedelta(minutes=15)


def signal(side: str = "long", entry: str = "100", sl: str = "98", tp: str = "104", sid: str = "s1") -> Signal:
    return Signal(sid, "b", "XUSDT", "15", "trend_pullback", side, Decimal(entry), Decimal(sl), Decimal(tp), T0,
                  {"f": 1.0})


def candle(n: int, o: float, h: float, lo: float, c: float, interval: str = "15") -> Candle:
    """The n-th candle after the signal (n = 1 opens at the signal's close)."""
    return Candle("XUSDT", interval, T0 + (n - 1) * STEP, o, h, lo, c, 1.0)


def test_take_profit() -> None:
    book = PhantomBook(timeout_candles=10)
    p = book.record(signal(), "EXECUTED")
    assert book.on_candle(candle(1, 100, 101.5, 99, 101)) == ([], [p])
    closed, _ = book.on_candle(candle(2, 101, 104.5, 100.5, 104))
    assert closed == [p]
    assert (p.outcome, p.exit_reason, p.exit_price, p.realized_r) == ("win", "tp", 104.0, 2.0)
    assert p.exit_time == T0 + 2 * STEP and p.candles_seen == 2
    assert p.mfe_r == 2.0 and p.mae_r == 0.5  # 99 was 0.5R against
    assert p.tp1_time == T0 + 2 * STEP  # 1R (102) first reached in candle 2
    assert p.pnl_pct == pytest.approx(4.0)
    assert book.count_active() == 0


def test_stop_loss_and_mfe_before_it() -> None:
    book = PhantomBook(timeout_candles=10)
    p = book.record(signal(), "REJECTED", "ev too low")
    book.on_candle(candle(1, 100, 102.5, 99.5, 101))  # 1.25R favourable, TP1 reached
    closed, _ = book.on_candle(candle(2, 101, 101.5, 97, 97.5))
    assert closed == [p]
    assert (p.outcome, p.exit_reason, p.exit_price, p.realized_r) == ("loss", "sl", 98.0, -1.0)
    assert p.mfe_r == 1.25 and p.mae_r == 1.0 and p.tp1_time == T0 + STEP
    assert not p.was_executed


def test_both_levels_in_one_candle_is_a_loss() -> None:
    book = PhantomBook(timeout_candles=10)
    p = book.record(signal(), "EXECUTED")
    book.on_candle(candle(1, 100, 105, 97, 101))
    assert (p.outcome, p.exit_reason, p.realized_r) == ("loss", "sl", -1.0)
    assert p.mfe_r == 0.0  # the favourable move may have come after the stop: not counted


def test_both_levels_resolved_by_the_lower_interval() -> None:
    # 5m candles inside the 15m candle: the first touches TP (104.5), the second the stop
    subs = [(100.0, 104.5, 99.5, 104.0, 1), (104.0, 104.2, 97.0, 97.5, 2), (97.5, 99.0, 97.2, 98.0, 3)]
    book = PhantomBook(timeout_candles=10, resolver=lambda sym, iv, open_ms: [
        (o, h, lo, c, int((T0 + timedelta(minutes=5 * k)).timestamp() * 1000)) for o, h, lo, c, k in subs])
    p = book.record(signal(), "EXECUTED")
    book.on_candle(candle(1, 100, 105, 97, 98))
    assert (p.outcome, p.exit_reason, p.realized_r) == ("win", "tp", 2.0)
    assert p.exit_time == T0 + timedelta(minutes=5)

    # a sub-candle that itself touches both: conservative again
    book2 = PhantomBook(timeout_candles=10, resolver=lambda *_: [(100.0, 105.0, 97.0, 99.0, 0)])
    q = book2.record(signal(sid="s2"), "EXECUTED")
    book2.on_candle(candle(1, 100, 105, 97, 98))
    assert q.exit_reason == "sl"


def test_timeout_keeps_the_signed_r() -> None:
    book = PhantomBook(timeout_candles=3)
    p = book.record(signal(), "BLOCKED", "max positions")
    book.on_candle(candle(1, 100, 101, 99, 100.5))
    book.on_candle(candle(2, 100.5, 101, 99, 100.2))
    closed, _ = book.on_candle(candle(3, 100.2, 101, 99.5, 101))
    assert closed == [p]
    assert (p.outcome, p.exit_reason, p.exit_price) == ("timeout", "timeout", 101.0)
    assert p.realized_r == pytest.approx(0.5)


def test_gap_closes_at_the_next_open() -> None:
    book = PhantomBook(timeout_candles=10)
    p = book.record(signal(), "EXECUTED")
    book.on_candle(candle(1, 100, 101, 99, 100.5))
    after = candle(6, 99.0, 100, 97, 97.5)  # candles 2..5 are missing
    closed = book.on_gap("XUSDT", "15", after)
    assert closed == [p]
    assert (p.outcome, p.exit_reason, p.exit_price, p.exit_time) == ("timeout", "gap", 99.0, after.open_time)
    assert p.realized_r == pytest.approx(-0.5)
    assert book.on_candle(after) == ([], [])  # nothing left to apply it to
    assert book.win_rate("trend_pullback") == (pytest.approx(float("nan"), nan_ok=True), 0)  # gap exits don't count


def test_opening_through_the_stop_costs_more_than_1r() -> None:
    book = PhantomBook(timeout_candles=10)
    p = book.record(signal(), "EXECUTED")
    book.on_candle(candle(1, 97.0, 97.5, 96, 96.5))
    assert (p.exit_reason, p.exit_price, p.exit_time) == ("sl", 97.0, T0)
    assert p.realized_r == pytest.approx(-1.5) and p.mae_r == pytest.approx(1.5)


def test_short_side() -> None:
    book = PhantomBook(timeout_candles=10)
    p = book.record(signal("short", "100", "102", "96"), "EXECUTED")
    book.on_candle(candle(1, 100, 101, 99, 99.5))
    closed, _ = book.on_candle(candle(2, 99.5, 99.6, 95.5, 96))
    assert closed == [p] and (p.exit_reason, p.realized_r, p.mae_r) == ("tp", 2.0, 0.5)


def test_several_phantoms_per_symbol_and_restart_safety() -> None:
    book = PhantomBook(timeout_candles=10)
    a = book.record(signal(sid="a"), "EXECUTED")
    b = book.record(signal(tp="110", sid="b"), "REJECTED")
    c1 = candle(1, 100, 104.5, 99, 104)
    closed, kept = book.on_candle(c1)
    assert closed == [a] and kept == [b]
    assert book.on_candle(c1) == ([], [b])  # the same candle again (after a restart) changes nothing
    assert b.candles_seen == 1


def test_stats_and_digest() -> None:
    book = PhantomBook(timeout_candles=10)
    win = book.record(signal(sid="w"), "EXECUTED")
    lose = book.record(signal(sid="l", tp="120"), "REJECTED")
    book.on_candle(candle(1, 100, 104.5, 99, 104))
    book.on_candle(candle(2, 104, 104, 97, 97))
    stats = PhantomStats()
    for p in (win, lose):
        stats.add(p)
    by = stats.by(strategy="trend_pullback")
    assert by.actions["EXECUTED"]["win_rate"] == 1.0 and by.actions["REJECTED"]["win_rate"] == 0.0
    assert by.what_if_rejected_r == -1.0 and by.actions["ALL"]["total"] == 2
    assert book.win_rate("trend_pullback") == (0.5, 2)
    digest = phantom_digest([win, lose])
    assert digest == phantom_digest([lose, win])  # independent of order
    lose.realized_r = -0.99
    assert phantom_digest([win, lose]) != digest  # any outcome field changes it
    assert phantom_digest([win]) != digest
