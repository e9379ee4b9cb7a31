"""The Telegram charts, rendered from a real replay (engine + trader + paper broker on the shared
candles): valid, phone-sized, non-blank PNGs; "no data yet" on empty input; figures that agree with
core.stats / PhantomStats; rendering off the event loop; no pyplot and no leak."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib import _pylab_helpers
from matplotlib.figure import Figure
from PIL import Image

from bench.charts import ReplayInputs, replay_inputs
from bot import charts
from core.stats import equity_curve, summarize
from tests.conftest import ROOT

NAMES = list(charts.CHARTS)


@pytest.fixture(scope="module")
def replay() -> ReplayInputs:
    return replay_inputs()


def _pixels(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as im:
        width, height = im.size
        assert 900 <= width <= 1200 and 550 <= height <= 800, im.size
        return np.asarray(im.convert("L"), dtype=np.float64)


def _drawn(png: bytes, min_ink: float) -> None:
    """Not blank: pixels vary, and at least `min_ink` of them are not background white."""
    px = _pixels(png)
    assert px.var() > 0
    assert (px < 250).mean() >= min_ink


def _render(name: str, replay: ReplayInputs) -> bytes:
    args, kwargs = replay.charts[name]
    return charts.CHARTS[name](*args, **kwargs)


def test_the_replay_gives_every_chart_real_input(replay: ReplayInputs) -> None:
    assert set(replay.charts) == set(NAMES)
    assert len(replay.trades) >= 20 and len(replay.phantoms) >= 100
    assert len({p.strategy for p in replay.phantoms}) >= 3
    actions = Counter(p.action for p in replay.phantoms)
    assert actions["EXECUTED"] > 0 and actions["BLOCKED"] > 0
    calibration, ev_buckets = replay.charts["calibration"][0]
    assert calibration and ev_buckets
    (view, trades), _ = replay.charts["candles"]
    assert len(view) > 100 and trades and trades[-1].status == "open"


@pytest.mark.parametrize("name", NAMES)
def test_chart_from_replay(replay: ReplayInputs, name: str) -> None:
    _drawn(_render(name, replay), min_ink=0.05)


def test_empty_inputs_say_no_data(replay: ReplayInputs) -> None:
    series = next(iter(replay.series.values()))
    empties = [
        charts.equity_chart([], Decimal(10_000)),
        charts.daily_pnl_chart({}),
        charts.win_rate_chart([]),
        charts.phantom_outcomes_chart([]),
        charts.phantom_outcomes_chart({}),
        charts.phantom_outcomes_chart([p for p in replay.phantoms if p.status == "active"]),
        charts.calibration_chart([]),
        charts.calibration_chart({"calibration": [], "ev_buckets": []}),
        charts.candles_chart(series.take(slice(0, 0))),
        charts.candles_chart({k: np.array([]) for k in ("open_ms", "open", "high", "low", "close")}, []),
    ]
    for png in empties:
        _drawn(png, min_ink=0.001)  # a title and "no data yet"


def test_single_points_and_partial_input(replay: ReplayInputs) -> None:
    t = replay.trades[0]
    _drawn(charts.equity_chart([(t.exit_time, 10_100.0)], 10_000), 0.01)
    _drawn(charts.daily_pnl_chart({t.exit_time.date(): -12.5}), 0.01)
    _drawn(charts.win_rate_chart([(t.exit_time, "scalp", True)]), 0.01)
    _drawn(charts.calibration_chart([(0.4, 0.5, 12)]), 0.01)  # plain tuples, no EV panel
    ev_only = replay.charts["calibration"][0][1]
    _drawn(charts.calibration_chart([], ev_only), 0.01)
    series = replay.charts["candles"][0][0]
    _drawn(charts.candles_chart(series.take(slice(0, 1)), []), 0.01)


def test_backtest_chart(replay: ReplayInputs) -> None:
    """The replay's --out picture: equity over the whole period over its drawdown, halted spans shaded;
    a period without trades is a flat line, not an error."""
    facts = charts.trade_facts(replay.trades)
    start, end = min(f.entry_time for f in facts), max(f.exit_time for f in facts) + timedelta(days=3)
    points = equity_curve(facts, Decimal(10_000))
    halted = [(points[len(points) // 2][0], end)]
    _drawn(charts.backtest_chart(points, Decimal(10_000), (start, end), halted), 0.05)
    _drawn(charts.backtest_chart([], Decimal(10_000), (start, end)), 0.01)


def test_input_forms_draw_the_same_chart(replay: ReplayInputs) -> None:
    assert (charts.phantom_outcomes_chart(replay.phantoms)
            == charts.phantom_outcomes_chart(charts.phantom_groups(replay.phantoms)))
    calibration, ev_buckets = replay.charts["calibration"][0]
    as_tuples = [(b["p_mean"], b["win_rate"], b["n"]) for b in calibration]
    assert (charts.calibration_chart(calibration, ev_buckets)
            == charts.calibration_chart({"calibration": calibration, "ev_buckets": ev_buckets})
            == charts.calibration_chart(as_tuples, ev_buckets))
    (series, trades), _ = replay.charts["candles"]
    arrays = {k: getattr(series, k) for k in ("open_ms", "open", "high", "low", "close")}
    assert charts.candles_chart(series, trades) == charts.candles_chart(arrays, trades, symbol=series.symbol,
                                                                        interval=series.interval)


def _texts(fig: Figure) -> str:
    out = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return "\n".join(out)


def test_figures_agree_with_core_stats(replay: ReplayInputs) -> None:
    """The equity chart's drawdown and net PnL are core.stats' figures for the same trades."""
    s = summarize(charts.trade_facts(replay.trades), replay.config.capital)
    fig = charts.new_figure()
    charts.draw_equity(fig, *replay.charts["equity"][0])
    text = _texts(fig)
    assert f"max drawdown {-s['max_drawdown']:,.2f} USDT ({-s['max_drawdown_pct']:.1f}%)" in text
    assert f"net {s['net_pnl']:+,.2f} USDT" in text and f"{s['trades']} closed trades" in text

    fig = charts.new_figure()
    charts.draw_daily_pnl(fig, *replay.charts["daily_pnl"][0])
    assert f"total {s['net_pnl']:+,.2f} USDT" in _texts(fig)

    fig = charts.new_figure()
    charts.draw_phantom_outcomes(fig, replay.phantoms)
    text = _texts(fig)
    closed = Counter(p.action for p in replay.phantoms if p.status == "closed")
    assert f"taken (n={closed['EXECUTED']})" in text and f"blocked (risk) (n={closed['BLOCKED']})" in text


def test_rolling_win_rate_is_a_rolling_mean() -> None:
    won = np.random.default_rng(3).integers(0, 2, 180).astype(np.float64)
    expected = pd.Series(won).rolling(50, min_periods=1).mean().to_numpy()
    np.testing.assert_allclose(charts._rolling_rate(won, 50), expected)


def test_win_outcomes_count_like_the_book(replay: ReplayInputs) -> None:
    outcomes = charts.win_outcomes(replay.phantoms)
    kept = [p for p in replay.phantoms if p.exit_reason != "gap"]
    assert len(outcomes) == len(kept)
    assert sum(w for _, _, w in outcomes) == sum((p.realized_r or 0) > 0 for p in kept)


async def test_render_runs_off_the_event_loop(replay: ReplayInputs) -> None:
    threads: list[str] = []

    def chart(*args: Any) -> bytes:
        threads.append(threading.current_thread().name)
        return charts.equity_chart(*args)

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        pngs = await asyncio.gather(*(charts.render(chart, *replay.charts["equity"][0]) for _ in range(3)))
    finally:
        task.cancel()
    assert all(p == pngs[0] for p in pngs) and pngs[0].startswith(b"\x89PNG")
    assert threads and all(t.startswith("charts") for t in threads)
    assert ticks >= 3  # the loop kept running while the charts rendered
    png = await charts.render(charts.candles_chart, *replay.charts["candles"][0], max_candles=60)
    _drawn(png, 0.05)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def test_no_figure_leak(replay: ReplayInputs) -> None:
    """20 charts in a row: pyplot's registry stays empty, no Figure outlives its PNG, memory is flat."""
    def live_figures() -> int:
        gc.collect()
        return sum(isinstance(o, Figure) for o in gc.get_objects())

    for name in NAMES:  # warm-up: font and text caches fill once
        _render(name, replay)
    before = live_figures()
    rss = _rss_mb() if sys.platform == "linux" else None
    for i in range(20):
        _render(NAMES[i % len(NAMES)], replay)
        assert len(_pylab_helpers.Gcf.figs) == 0
    assert live_figures() == before
    if rss is not None:
        # one leaked figure holds >= 2.6 MB (its 1000x650 RGBA buffer): 20 would add > 50 MB
        assert _rss_mb() - rss < 20, f"resident memory grew by {_rss_mb() - rss:.1f} MB over 20 charts"


def test_charts_never_import_pyplot() -> None:
    code = ("import sys; from bot import charts; charts.equity_chart([], 1); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
