"""The engine on real candles: all strategies fire, features see no future, ticks, gaps, determinism."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from core.config import BotConfig
from core.engine import Decision, Engine
from core.instruments import Instruments
from core.market.candle import dt_to_ms
from core.market.replay import ReplayFeed, sort_key
from core.market.series import CandleSeries
from core.phantom import Phantom, phantom_digest
from core.strategies.features import FEATURES
from storage.candle_files import read_candle_dir
from tests.conftest import CANDLES

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]


def _config() -> BotConfig:
    return BotConfig(id="t", symbols=SYMBOLS, slow_interval="15", fast_interval="5")


def _run(series: list[CandleSeries], **feed_args: object) -> tuple[Engine, list[Decision], list[Phantom]]:
    engine = Engine(_config())
    decisions: list[Decision] = []
    closed: list[Phantom] = []
    for candle in ReplayFeed(series, **feed_args).candles():  # type: ignore[arg-type]
        result = engine.on_candle(candle)
        decisions.extend(result.decisions)
        closed.extend(result.closed)
    return engine, decisions, closed


@pytest.fixture(scope="module")
def series() -> list[CandleSeries]:
    return read_candle_dir(CANDLES / "binance_spot_2020-12_2021-07", intervals=["15", "5"])


@pytest.fixture(scope="module")
def full(series: list[CandleSeries]) -> tuple[Engine, list[Decision], list[Phantom]]:
    return _run(series)


def test_all_strategies_fire_and_every_signal_is_followed(full: tuple[Engine, list[Decision], list[Phantom]]) -> None:
    engine, decisions, closed = full
    by_strategy = {d.signal.strategy for d in decisions}
    assert by_strategy == {"trend_pullback", "mean_reversion", "scalp"}
    for name in by_strategy:
        assert sum(d.signal.strategy == name for d in decisions) >= 30  # enough to learn from
    assert len(closed) + engine.book.count_active() == len(decisions)
    assert engine.counters["signals"] == len(decisions)


def test_levels_on_the_tick_grid(full: tuple[Engine, list[Decision], list[Phantom]]) -> None:
    instruments = Instruments()
    for d in full[1]:
        s = d.signal
        tick = instruments.get(s.symbol, float(s.entry)).tick
        for level in (s.entry, s.stop_loss, s.take_profit):
            assert level % tick == 0, (s.symbol, level, tick)
        direction = s.direction
        assert (s.entry - s.stop_loss) * direction > 0 and (s.take_profit - s.entry) * direction > 0


def test_features_named_documented_finite(full: tuple[Engine, list[Decision], list[Phantom]]) -> None:
    assert len(FEATURES) >= 30
    for d in full[1][:500]:
        assert list(d.signal.features) == list(FEATURES)
        assert all(math.isfinite(v) for v in d.signal.features.values())
    assert all(desc.strip() for desc in FEATURES.values())


def test_no_phantom_spans_a_gap_silently(series: list[CandleSeries],
                                         full: tuple[Engine, list[Decision], list[Phantom]]) -> None:
    gaps = {(s.symbol, s.interval): s.gaps() for s in series}
    gap_exits = 0
    for p in full[2]:
        spans = [g for g in gaps[(p.symbol, p.interval)]
                 if dt_to_ms(p.opened_at) <= g.last_before_ms and g.first_after_ms <= dt_to_ms(p.exit_time)]
        if p.exit_reason == "gap":
            gap_exits += 1
            assert len(spans) == 1 and dt_to_ms(p.exit_time) == spans[0].first_after_ms
        else:
            assert not spans, (p.id, p.exit_reason, spans)
    assert gap_exits > 0  # the data's outages really were crossed by some phantoms


def test_deterministic(series: list[CandleSeries], full: tuple[Engine, list[Decision], list[Phantom]]) -> None:
    start = dt_to_ms(datetime(2021, 2, 1, tzinfo=UTC))
    part = [s.window(None, start + 20 * 86_400_000) for s in series]
    a, b = _run(part), _run(part)
    assert phantom_digest(a[2]) == phantom_digest(b[2])
    assert [d.signal for d in a[1]] == [d.signal for d in b[1]]
    assert [d.signal.features for d in a[1]] == [d.signal.features for d in b[1]]


def test_features_see_no_future(series: list[CandleSeries]) -> None:
    """Truncate the data right after a signal's candle: the signal and its features are unchanged."""
    start = dt_to_ms(datetime(2021, 3, 1, tzinfo=UTC))
    part = [s.window(start, start + 30 * 86_400_000) for s in series]
    _, decisions, _ = _run(part)
    assert len(decisions) > 20
    picks = [decisions[i] for i in range(5, len(decisions), len(decisions) // 5)][:5]
    for d in picks:
        # every candle sorted up to and including the signal's own candle, and nothing after it
        step = {"15": 900_000, "5": 300_000}[d.signal.interval]
        key = (dt_to_ms(d.signal.time), step, d.signal.symbol)
        engine = Engine(_config())
        last: Decision | None = None
        for candle in ReplayFeed(part).candles():
            if sort_key(candle) > key:
                break
            for decision in engine.on_candle(candle).decisions:
                if decision.signal.id == d.signal.id:
                    last = decision
        assert last is not None, "the truncated run lost the signal"
        assert last.signal == d.signal and last.signal.features == d.signal.features


def test_warm_then_resume_equals_one_run(series: list[CandleSeries]) -> None:
    """Resuming from a checkpoint (indicators warmed on the candles before it) changes nothing."""
    start = dt_to_ms(datetime(2021, 1, 1, tzinfo=UTC))
    part = [s.window(start, start + 15 * 86_400_000) for s in series]
    whole_engine, _, whole_closed = _run(part)
    candles = list(ReplayFeed(part).candles())
    cut = len(candles) // 2
    first = Engine(_config())
    closed = [p for c in candles[:cut] for p in first.on_candle(c).closed]
    checkpoint = first.checkpoint()
    active = [p for ps in first.book.active.values() for p in ps]
    second = Engine(_config())
    second.restore(checkpoint, active)
    for c in candles:
        if sort_key(c) <= checkpoint.after:
            second.warm(c)
        else:
            closed.extend(second.on_candle(c).closed)
    assert phantom_digest(closed) == phantom_digest(whole_closed)
    assert second.counters == whole_engine.counters
