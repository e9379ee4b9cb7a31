"""The Telegram interface's charts: pure functions from plain data to PNG bytes.

Each chart is drawn on its own `matplotlib.figure.Figure` with the Agg canvas, never through pyplot:
pyplot keeps every figure in a global registry until it is closed, which leaks in a long-running
process and is not safe across threads. A figure made here is referenced by nothing global, so it is
freed like any other object once its PNG is written.

Rendering is CPU-bound (tens to hundreds of milliseconds): `await render(chart_fn, *args)` runs it on
one dedicated worker thread so the event loop keeps answering. One worker, not a pool: matplotlib
does not promise thread safety, and charts are rare enough that a queue of them costs little.

Every chart is ~1000x650 px, big fonts, dark on light, times in UTC, and renders "no data yet"
instead of raising when its input is empty. The `draw_*` functions draw onto a given figure (the
benchmark uses them with a pyplot figure as its baseline); the `*_chart` functions return PNG bytes.
Metrics come from core.stats / core.phantom / core.ml.metrics, never recomputed differently here.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import io
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from core.ledger import TradeRecord
from core.market.candle import INTERVAL_MS, interval_label
from core.market.series import CandleSeries
from core.phantom import ActionFigures, Phantom, PhantomStats
from core.report import closed_facts
from core.stats import TradeFacts, max_drawdown

WIDTH_PX, HEIGHT_PX, DPI = 1000, 650, 100
TITLE, LABEL, TICK, LEGEND, NOTE = 17, 14, 12.5, 12, 12
GREEN, RED, BLUE, GREY, INK = "#1a9850", "#d73027", "#2b6cb0", "#718096", "#1a202c"
ACTIONS: tuple[tuple[str, str, str], ...] = (  # action, legend label, colour
    ("EXECUTED", "taken", BLUE), ("REJECTED", "rejected (ML, fill rules)", "#dd6b20"),
    ("BLOCKED", "blocked (risk)", GREY))
WIN_RATE_WINDOW = 50
MIN_POINTS = 10  # a rolling win rate over fewer outcomes than this is noise: start the line after it

CalibrationBin = Mapping[str, Any] | tuple[float, float, int]  # metrics.calibration_curve row, or (p, rate, n)
GroupFigures = Mapping[str, ActionFigures]  # strategy -> its PhantomStats figures by action
Candles = CandleSeries | Mapping[str, np.ndarray]  # or arrays: open_ms, open, high, low, close


# --- rendering -----------------------------------------------------------------------------------
def new_figure() -> Figure:
    """A phone-sized figure on its own Agg canvas (constrained layout keeps the exact pixel size)."""
    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _draw_png(draw: Callable[..., None], *args: Any, **kwargs: Any) -> bytes:
    fig = new_figure()
    draw(fig, *args, **kwargs)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def png(draw: Callable[..., None], *args: Any, **kwargs: Any) -> bytes:
    data = _draw_png(draw, *args, **kwargs)
    # A figure is a web of reference cycles (figure <-> canvas, axes <-> artists): refcounting never frees
    # it, and full collections are rare, so dead figures (a few MB each) piled up to ~40 MB of resident
    # memory. The figure is young: collecting generations 0-1 frees it in a few ms (a full collection of
    # the desk's heap takes ~100 ms).
    gc.collect(1)
    return data


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _worker() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="charts")
        return _executor


async def render(fn: Callable[..., bytes], *args: Any, **kwargs: Any) -> bytes:
    """Run a chart function off the event loop: `png = await render(equity_chart, points, capital)`."""
    return await asyncio.get_running_loop().run_in_executor(_worker(), functools.partial(fn, *args, **kwargs))


# --- adapters: domain objects -> the plain inputs below ---------------------------------------------
def trade_facts(trades: Iterable[TradeRecord]) -> list[TradeFacts]:
    """Closed ledger trades as core.stats sees them (the same selection as core.report.trade_summary)."""
    return closed_facts(trades)


def win_outcomes(phantoms: Iterable[Phantom]) -> list[tuple[datetime, str, bool]]:
    """(exit time, strategy, won) of closed phantoms, as the book's win-rate windows count them: gap
    exits left out, a win is R > 0 (PhantomBook.observe)."""
    return [(p.exit_time, p.strategy, (p.realized_r or 0) > 0) for p in phantoms
            if p.status == "closed" and p.exit_time is not None and p.exit_reason != "gap"]


def phantom_groups(phantoms: Iterable[Phantom]) -> dict[str, ActionFigures]:
    """strategy -> action -> {total, wins, win_rate, avg_r, sum_r}: the /phantom_stats figures."""
    stats = PhantomStats()
    for p in phantoms:
        stats.add(p)
    return {s: stats.by(strategy=s) for s in stats.strategies()}


# --- shared drawing helpers ----------------------------------------------------------------------------
def _no_data(fig: Figure, title: str, message: str = "no data yet") -> None:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title, fontsize=TITLE, color=INK, loc="left")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=22, color=GREY, transform=ax.transAxes)


def _style(ax: Axes) -> None:
    ax.set_facecolor("white")
    ax.grid(True, color="#cbd5e0", alpha=0.6, linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=TICK, colors=INK)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _date_axis(ax: Axes, label: str = "date (UTC)") -> None:
    locator = mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.xaxis.get_offset_text().set_fontsize(TICK)
    ax.set_xlabel(label, fontsize=LABEL, color=INK)


def _utc(t: datetime | date) -> datetime:
    """Aware UTC datetime (naive times are UTC by the desk's convention; dates are UTC days)."""
    if not isinstance(t, datetime):
        return datetime(t.year, t.month, t.day, tzinfo=UTC)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _x(times: Sequence[datetime | date]) -> np.ndarray:
    return np.asarray(mdates.date2num([_utc(t) for t in times]), dtype=np.float64)


def _money(x: float) -> str:
    return f"{x:+,.2f}"


def _legend(ax: Axes, **kwargs: Any) -> None:
    ax.legend(fontsize=LEGEND, frameon=True, framealpha=0.9, **kwargs)


# --- 1. equity curve ------------------------------------------------------------------------------------
def draw_equity(fig: Figure, points: Sequence[tuple[datetime, float]], capital: float | Decimal,
                title: str = "Equity") -> None:
    if not points:
        _no_data(fig, title)
        return
    pts = sorted(points, key=lambda p: _utc(p[0]))
    start = float(capital)
    # the curve starts at the capital, flat until the first exit: equity only moves when a trade closes
    x = _x([pts[0][0]] + [t for t, _ in pts])
    eq = np.array([start] + [float(e) for _, e in pts])
    peak = np.maximum.accumulate(eq)
    dd_usd, dd_pct = max_drawdown(eq[1:].tolist(), start)  # core.stats' definition, not a local one
    net = eq[-1] - start

    ax = fig.add_subplot()
    _style(ax)
    ax.plot(x, eq, drawstyle="steps-post", color=BLUE, linewidth=2.2, label="equity")
    ax.fill_between(x, eq, peak, where=peak > eq, step="post", color=RED, alpha=0.25, linewidth=0,
                    label="drawdown from peak")
    ax.axhline(start, color=GREY, linestyle=":", linewidth=1.4, label=f"start {start:,.0f} USDT")
    if dd_usd > 0:  # the trough marked on the curve, its figures in the legend (placed where it hides nothing)
        i = int(np.argmax(peak - eq))
        ax.plot([x[i]], [eq[i]], marker="o", markersize=10, color=RED, markeredgecolor="white", linestyle="",
                label=f"max drawdown {-dd_usd:,.2f} USDT ({-dd_pct:.1f}%)")
    pct = f" ({net / start * 100:+.1f}%)" if start > 0 else ""
    ax.set_title(f"{title} — net {_money(net)} USDT{pct}, {len(pts)} closed trades",
                 fontsize=TITLE, color=INK, loc="left")
    ax.set_ylabel("equity (USDT)", fontsize=LABEL, color=INK)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    _date_axis(ax)
    _legend(ax, loc="best")


def equity_chart(points: Sequence[tuple[datetime, float]], capital: float | Decimal, title: str = "Equity") -> bytes:
    """points: (exit time, equity after it), e.g. core.stats.equity_curve(trades, capital)."""
    return png(draw_equity, points, capital, title)


def draw_backtest(fig: Figure, points: Sequence[tuple[datetime, float]], capital: float | Decimal,
                  period: tuple[datetime, datetime], halted: Sequence[tuple[datetime, datetime]] = (),
                  title: str = "Backtest") -> None:
    """A replay's equity over its whole period (flat where it traded nothing) above its drawdown from
    the running peak in %, with the spans the bot spent halted shaded on both."""
    start = float(capital)
    pts = sorted(points, key=lambda p: _utc(p[0]))
    x = _x([period[0], *(t for t, _ in pts), period[1]])
    eq = np.array([start, *(float(e) for _, e in pts), pts[-1][1] if pts else start])
    peak = np.maximum.accumulate(eq)
    dd_pct = np.where(peak > 0, (eq - peak) / peak * 100, 0.0)  # core.stats.max_drawdown's % (negated)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for ax in (top, bottom):
        _style(ax)
        for i, (a, b) in enumerate(halted):
            ax.axvspan(_x([a])[0], _x([b])[0], color=GREY, alpha=0.18, linewidth=0,
                       label="halted" if ax is top and i == 0 else None)
    top.plot(x, eq, drawstyle="steps-post", color=BLUE, linewidth=2.0, label="equity")
    top.axhline(start, color=GREY, linestyle=":", linewidth=1.4, label=f"start {start:,.0f} USDT")
    net = eq[-1] - start
    top.set_title(f"{title} — net {_money(net)} USDT ({net / start * 100 if start else 0:+.1f}%), "
                  f"{len(pts)} closed trades", fontsize=TITLE, color=INK, loc="left")
    top.set_ylabel("equity (USDT)", fontsize=LABEL, color=INK)
    top.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    _legend(top, loc="best")
    bottom.fill_between(x, dd_pct, 0, step="post", color=RED, alpha=0.35, linewidth=0)
    bottom.plot(x, dd_pct, drawstyle="steps-post", color=RED, linewidth=1.2)
    bottom.set_ylabel("drawdown", fontsize=LABEL, color=INK)
    bottom.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    _date_axis(bottom)


def backtest_chart(points: Sequence[tuple[datetime, float]], capital: float | Decimal,
                   period: tuple[datetime, datetime], halted: Sequence[tuple[datetime, datetime]] = (),
                   title: str = "Backtest") -> bytes:
    """points: core.stats.equity_curve(trades, capital); halted: (halt, resume or period end) spans."""
    return png(draw_backtest, points, capital, period, halted, title)


# --- 2. daily PnL ---------------------------------------------------------------------------------------
def draw_daily_pnl(fig: Figure, pnl: Mapping[date, float], title: str = "Daily PnL") -> None:
    if not pnl:
        _no_data(fig, title)
        return
    days = sorted(pnl)
    values = np.array([float(pnl[d]) for d in days])
    x = _x(days) + 0.5  # a bar covers its UTC day
    ax = fig.add_subplot()
    _style(ax)
    ax.bar(x, values, width=0.8, color=np.where(values >= 0, GREEN, RED), label="daily PnL")
    ax.axhline(0, color=INK, linewidth=0.8)
    ax.set_ylabel("PnL per UTC day (USDT)", fontsize=LABEL, color=INK)
    # the cumulative line on its own scale: a month of small days would be flattened by its total
    ax2 = ax.twinx()
    ax2.plot(x, np.cumsum(values), color=INK, linewidth=2, marker="o", markersize=3, label="cumulative")
    ax2.tick_params(labelsize=TICK, colors=INK)
    ax2.set_ylabel("cumulative PnL (USDT)", fontsize=LABEL, color=INK)
    ax2.spines["top"].set_visible(False)
    for a in (ax, ax2):
        a.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    up = int((values > 0).sum())
    ax.set_title(f"{title} — total {_money(values.sum())} USDT, {up}/{len(values)} days up",
                 fontsize=TITLE, color=INK, loc="left")
    _date_axis(ax, "day (UTC)")
    handles = [Line2D([], [], color=GREEN, linewidth=8, label="day up"),
               Line2D([], [], color=RED, linewidth=8, label="day down"),
               Line2D([], [], color=INK, linewidth=2, marker="o", label="cumulative (right axis)")]
    ax2.legend(handles=handles, fontsize=LEGEND, loc="best", framealpha=0.9)  # on the top axes: not crossed


def daily_pnl_chart(pnl: Mapping[date, float], title: str = "Daily PnL") -> bytes:
    """pnl: UTC day -> net PnL in USDT, e.g. core.stats.daily_pnl(trades)."""
    return png(draw_daily_pnl, pnl, title)


# --- 3. rolling win rate per strategy ---------------------------------------------------------------------
def _rolling_rate(won: np.ndarray, window: int) -> np.ndarray:
    """Win rate over the last `window` outcomes at each outcome (fewer at the start)."""
    c = np.concatenate(([0.0], np.cumsum(won, dtype=np.float64)))
    end = np.arange(1, len(won) + 1)
    begin = np.maximum(0, end - window)
    return (c[end] - c[begin]) / (end - begin)


def draw_win_rate(fig: Figure, outcomes: Sequence[tuple[datetime, str, bool]], window: int = WIN_RATE_WINDOW,
                  title: str = "Rolling win rate") -> None:
    full_title = f"{title} — last {window} outcomes per strategy"
    if not outcomes:
        _no_data(fig, full_title)
        return
    by_strategy: dict[str, list[tuple[datetime, bool]]] = {}
    for t, strategy, won in outcomes:
        by_strategy.setdefault(strategy, []).append((_utc(t), bool(won)))
    ax = fig.add_subplot()
    _style(ax)
    colors = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#975a16"]
    for k, (strategy, rows) in enumerate(sorted(by_strategy.items())):
        rows.sort(key=lambda r: r[0])
        x = _x([t for t, _ in rows])
        rate = _rolling_rate(np.array([w for _, w in rows], dtype=np.float64), window) * 100
        color = colors[k % len(colors)]
        first = min(MIN_POINTS, len(rows)) - 1
        full = min(window, len(rows)) - 1
        # the warm-up (window not yet full) is drawn faint: fewer outcomes, more noise
        ax.plot(x[first:full + 1], rate[first:full + 1], color=color, linewidth=1.6, alpha=0.45)
        ax.plot(x[full:], rate[full:], color=color, linewidth=2.4, marker="o" if len(rows) - full < 3 else None,
                label=f"{strategy}: {rate[-1]:.0f}% now (n={len(rows)})")
    ax.axhline(50, color=INK, linestyle="--", linewidth=1.2, label="50%")
    ax.set_ylim(0, 100)
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set_ylabel(f"win rate, last {window} outcomes", fontsize=LABEL, color=INK)
    ax.set_title(full_title, fontsize=TITLE, color=INK, loc="left")
    _date_axis(ax, "outcome time (UTC)")
    _legend(ax, loc="best")


def win_rate_chart(outcomes: Sequence[tuple[datetime, str, bool]], window: int = WIN_RATE_WINDOW,
                   title: str = "Rolling win rate") -> bytes:
    """outcomes: (exit time, strategy, won), e.g. win_outcomes(closed phantoms)."""
    return png(draw_win_rate, outcomes, window, title)


# --- 4. phantom outcomes: taken vs rejected vs blocked --------------------------------------------------
def draw_phantom_outcomes(fig: Figure, data: Iterable[Phantom] | GroupFigures,
                          title: str = "Signals taken vs rejected vs blocked") -> None:
    groups = data if isinstance(data, Mapping) else phantom_groups(data)
    strategies = [s for s in sorted(groups) if any((groups[s].get(a) or {}).get("total") for a, _, _ in ACTIONS)]
    if not strategies:
        _no_data(fig, title)
        return
    win_ax, r_ax = fig.subplots(1, 2)
    width = 0.8 / len(ACTIONS)
    pos = np.arange(len(strategies), dtype=np.float64)
    what_if, n_rejected = 0.0, 0
    for j, (action, label, color) in enumerate(ACTIONS):
        figs = [groups[s].get(action) or {} for s in strategies]
        n = [int(f.get("total") or 0) for f in figs]
        wr = [(f.get("win_rate") or 0.0) * 100 if k else 0.0 for f, k in zip(figs, n, strict=True)]
        avg = [(f.get("avg_r") or 0.0) if k else 0.0 for f, k in zip(figs, n, strict=True)]
        if action == "REJECTED":
            n_rejected = sum(n)
            what_if = sum(float(f["sum_r"]) if f.get("sum_r") is not None else (f.get("avg_r") or 0.0) * k
                          for f, k in zip(figs, n, strict=True))
        x = pos + (j - (len(ACTIONS) - 1) / 2) * width
        total = sum(n)
        bars = win_ax.bar(x, wr, width, color=color, label=f"{label} (n={total})")
        win_ax.bar_label(bars, labels=[f"n={k}" for k in n], fontsize=10.5, padding=2, color=INK)
        bars = r_ax.bar(x, avg, width, color=color)
        r_ax.bar_label(bars, labels=[f"{v:+.2f}" if k else "–" for v, k in zip(avg, n, strict=True)],
                       fontsize=10.5, padding=2, color=INK)
    names = [s.replace("_", "\n") for s in strategies]  # long names wrap instead of overlapping
    for ax in (win_ax, r_ax):
        _style(ax)
        ax.set_xticks(pos, names)
        ax.margins(y=0.15)
    win_ax.set_ylim(0, 110)
    win_ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    win_ax.set_ylabel("win rate (closed phantoms)", fontsize=LABEL, color=INK)
    r_ax.axhline(0, color=INK, linewidth=0.9)
    r_ax.set_ylabel("average outcome (R)", fontsize=LABEL, color=INK)
    _legend(win_ax, loc="upper left", ncols=1)
    # the question this chart answers: what did the signals the desk did not take do?
    what_if_text = (f"the {n_rejected} rejected would have made {what_if:+.1f} R" if n_rejected
                    else "none rejected by the ML filter yet")
    fig.suptitle(f"{title}\n{what_if_text}", fontsize=TITLE, color=INK, x=0.01, ha="left")  # two lines: never clipped
    win_ax.set_title("win rate", fontsize=LABEL, color=INK)
    r_ax.set_title("average outcome per signal", fontsize=LABEL, color=INK)


def phantom_outcomes_chart(data: Iterable[Phantom] | GroupFigures,
                           title: str = "Signals taken vs rejected vs blocked") -> bytes:
    """data: closed phantoms, or strategy -> action -> figures with total / win_rate / avg_r (and sum_r),
    i.e. {s: PhantomStats.by(strategy=s)} as /phantom_stats computes them."""
    return png(draw_phantom_outcomes, data, title)


# --- 5. ML calibration ------------------------------------------------------------------------------------
def _bin_point(b: CalibrationBin) -> tuple[float, float, int]:
    if isinstance(b, Mapping):
        p = b.get("p_mean")
        if p is None:
            p = (float(b["lo"]) + float(b["hi"])) / 2
        return float(p), float(b["win_rate"]), int(b.get("n", 0))
    p, rate, n = b
    return float(p), float(rate), int(n)


def _bucket_label(lo: float | None, hi: float | None) -> str:
    if lo is None:
        return f"< {hi:+.2f}"
    if hi is None:
        return f"≥ {lo:+.2f}"
    return f"{lo:+.2f}\n…{hi:+.2f}"


def draw_calibration(fig: Figure, calibration: Sequence[CalibrationBin] | Mapping[str, Any],
                     ev_buckets: Sequence[Mapping[str, Any]] | None = None,
                     title: str = "ML filter calibration") -> None:
    if isinstance(calibration, Mapping):  # Evaluation.charts() / StrategyReport.as_dict()
        ev_buckets = ev_buckets if ev_buckets is not None else calibration.get("ev_buckets")
        calibration = calibration.get("calibration") or []
    points = [_bin_point(b) for b in calibration]
    buckets = list(ev_buckets or [])
    if not points and not buckets:
        _no_data(fig, title)
        return
    axes = fig.subplots(1, int(bool(points)) + int(bool(buckets)), squeeze=False)[0]
    if points:
        ax = axes[0]
        _style(ax)
        p = np.array([q[0] for q in points]) * 100
        rate = np.array([q[1] for q in points]) * 100
        n = np.array([q[2] for q in points])
        ax.plot([0, 100], [0, 100], color=GREY, linestyle="--", linewidth=1.3, label="perfectly calibrated")
        ax.plot(p, rate, color=BLUE, linewidth=2, zorder=3)
        ax.scatter(p, rate, s=40 + 360 * n / max(int(n.max()), 1), color=BLUE, edgecolor="white", zorder=4,
                   label="observed (size: signals)")
        for xi, yi, ni in zip(p, rate, n, strict=True):
            ax.annotate(f"n={ni}", (xi, yi), xytext=(10, 6), textcoords="offset points", fontsize=10.5, color=INK,
                        bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(PercentFormatter(decimals=0))
        ax.set_xlabel("predicted p(win)", fontsize=LABEL, color=INK)
        ax.set_ylabel("observed win rate", fontsize=LABEL, color=INK)
        ax.set_title(f"predicted vs observed ({int(n.sum())} signals)", fontsize=LABEL, color=INK)
        _legend(ax, loc="upper left")
    if buckets:
        ax = axes[-1]
        _style(ax)
        lift = np.array([float(b.get("lift_r", 0.0)) for b in buckets])
        pos = np.arange(len(buckets))
        bars = ax.bar(pos, lift, 0.7, color=np.where(lift >= 0, GREEN, RED))
        ax.bar_label(bars, labels=[f"{v:+.2f}R\nn={int(b.get('n', 0))}" for v, b in zip(lift, buckets, strict=True)],
                     fontsize=10.5, padding=2, color=INK)
        ax.axhline(0, color=INK, linewidth=0.9)
        ax.set_xticks(pos, [_bucket_label(b.get("lo"), b.get("hi")) for b in buckets], fontsize=TICK - 1.5)
        ax.margins(y=0.25)
        ax.set_xlabel("predicted EV bucket (R)", fontsize=LABEL, color=INK)
        ax.set_ylabel("lift vs all signals (R)", fontsize=LABEL, color=INK)
        ax.set_title("realized lift by predicted EV", fontsize=LABEL, color=INK)
    fig.suptitle(title, fontsize=TITLE, color=INK, x=0.01, ha="left")


def calibration_chart(calibration: Sequence[CalibrationBin] | Mapping[str, Any],
                      ev_buckets: Sequence[Mapping[str, Any]] | None = None,
                      title: str = "ML filter calibration") -> bytes:
    """calibration: core.ml.metrics.calibration_curve rows ({lo, hi, n, p_mean, win_rate}) or
    (p_mean, win_rate, n) tuples, or a mapping holding "calibration" and "ev_buckets" (Evaluation.charts());
    ev_buckets: core.ml.metrics.ev_buckets rows ({lo, hi, n, lift_r, ...})."""
    return png(draw_calibration, calibration, ev_buckets, title)


# --- 6. candles with trades -------------------------------------------------------------------------------
def _arrays(candles: Candles) -> dict[str, np.ndarray]:
    keys = ("open_ms", "open", "high", "low", "close")
    if isinstance(candles, CandleSeries):
        return {k: getattr(candles, k) for k in keys}
    return {k: np.asarray(candles[k]) for k in keys}


def _f(x: Decimal | float | None) -> float | None:
    return None if x is None else float(x)


def draw_candles(fig: Figure, candles: Candles, trades: Sequence[TradeRecord] = (), *, symbol: str | None = None,
                 interval: str | None = None, max_candles: int = 200, show_levels: bool = True) -> None:
    symbol = symbol or getattr(candles, "symbol", None) or ""
    interval = interval or getattr(candles, "interval", None)
    name = f"{symbol} {interval_label(interval) if interval in INTERVAL_MS else interval or ''}".strip()
    a = _arrays(candles)
    if not len(a["open_ms"]):
        _no_data(fig, name or "Candles")
        return
    a = {k: v[-max_candles:] for k, v in a.items()}  # the tail: a phone shows ~200 candles legibly
    open_ms = a["open_ms"].astype(np.int64)
    step_ms = int(np.median(np.diff(open_ms))) if len(open_ms) > 1 else INTERVAL_MS.get(interval or "", 60_000)
    step = step_ms / 86_400_000  # matplotlib dates are in days
    x = np.asarray(mdates.date2num(open_ms.astype("datetime64[ms]")), dtype=np.float64) + step / 2
    o, h, lo, c = (a[k].astype(np.float64) for k in ("open", "high", "low", "close"))
    color = np.where(c >= o, GREEN, RED)

    ax = fig.add_subplot()
    _style(ax)
    ax.vlines(x, lo, h, colors=list(color), linewidth=1)
    # bodies as one collection (hundreds of Rectangle patches would be several times slower)
    half = step * 0.35
    bottom, top = np.minimum(o, c), np.maximum(o, c)
    verts = np.stack([np.stack([x - half, bottom], 1), np.stack([x - half, top], 1),
                      np.stack([x + half, top], 1), np.stack([x + half, bottom], 1)], axis=1)
    ax.add_collection(PolyCollection(list(verts), facecolors=color, edgecolors=color, linewidths=0.8))
    ax.autoscale_view()

    x0, x1 = x[0] - step, x[-1] + step
    shown = 0
    for t in trades:
        entry_x = float(mdates.date2num(_utc(t.entry_time)))
        exit_x = float(mdates.date2num(_utc(t.exit_time))) if t.exit_time is not None else None
        entry_in = x0 <= entry_x <= x1
        exit_in = exit_x is not None and x0 <= exit_x <= x1
        is_open = t.status == "open" or t.exit_time is None
        if not (entry_in or exit_in or (is_open and entry_x <= x1)):
            continue
        shown += 1
        entry = float(t.entry_price)
        if entry_in:
            ax.scatter([entry_x], [entry], marker="^" if t.side == "long" else "v", s=170, color=BLUE,
                       edgecolor="white", linewidth=1.2, zorder=5)
        if exit_in and exit_x is not None and t.exit_price is not None:
            won = (_f(t.net_pnl) or 0.0) > 0
            ax.scatter([exit_x], [float(t.exit_price)], marker="X", s=150, color=GREEN if won else RED,
                       edgecolor="white", linewidth=1, zorder=5)
            if entry_in:
                ax.plot([entry_x, exit_x], [entry, float(t.exit_price)], color=GREEN if won else RED,
                        linestyle=":", linewidth=1.4, zorder=4)
        if is_open and show_levels:
            start = max(entry_x, x0)
            for level, lcolor, tag in ((_f(t.stop_loss), RED, "SL"), (_f(t.take_profit), GREEN, "TP")):
                if level is not None:
                    ax.hlines(level, start, x1, colors=lcolor, linestyles="--", linewidth=1.5, zorder=4)
                    ax.annotate(f"{tag} {level:,.6g}", (x1, level), xytext=(-4, 4), textcoords="offset points",
                                ha="right", fontsize=NOTE - 1, color=lcolor, zorder=6,
                                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": lcolor,
                                      "alpha": 0.9})
    ax.set_xlim(x0, x1)
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax.set_ylabel("price (USDT)", fontsize=LABEL, color=INK)
    ax.set_title(f"{name} — {len(x)} candles, {shown} trades", fontsize=TITLE, color=INK, loc="left")
    _date_axis(ax, "time (UTC)")
    handles = [Line2D([], [], marker="^", linestyle="", color=BLUE, markersize=11, label="long entry"),
               Line2D([], [], marker="v", linestyle="", color=BLUE, markersize=11, label="short entry"),
               Line2D([], [], marker="X", linestyle="", color=GREEN, markersize=10, label="exit, win"),
               Line2D([], [], marker="X", linestyle="", color=RED, markersize=10, label="exit, loss")]
    ax.legend(handles=handles, fontsize=LEGEND - 1, loc="upper left", framealpha=0.9, ncols=2)


def candles_chart(candles: Candles, trades: Sequence[TradeRecord] = (), *, symbol: str | None = None,
                  interval: str | None = None, max_candles: int = 200, show_levels: bool = True) -> bytes:
    """candles: a CandleSeries, or a mapping of arrays open_ms / open / high / low / close (symbol and
    interval then given as arguments); trades: ledger records (entry/exit time and price, side, net PnL;
    SL/TP lines for open ones when show_levels). The last `max_candles` candles are drawn."""
    return png(draw_candles, candles, trades, symbol=symbol, interval=interval, max_candles=max_candles,
               show_levels=show_levels)


CHARTS: dict[str, Callable[..., bytes]] = {
    "equity": equity_chart, "daily_pnl": daily_pnl_chart, "win_rate": win_rate_chart,
    "phantom_outcomes": phantom_outcomes_chart, "calibration": calibration_chart, "candles": candles_chart,
}


# --- 7. a parameter search: its history and what mattered --------------------------------------------------
def draw_optimization(fig: Figure, history: Sequence[tuple[int, float | None]], importances: Mapping[str, float],
                      title: str = "Study", objective: str = "objective") -> None:
    """history: (trial number, in-sample objective or None when the trial failed); importances: parameter ->
    its share of what sets the best trials apart (Optuna's PED-ANOVA), largest first."""
    if not history:
        _no_data(fig, title, "no finished trial yet")
        return
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 2))
    _style(top)
    scored = [(n, v) for n, v in history if v is not None]
    failed = [n for n, v in history if v is None]
    if scored:
        n, v = np.array([s[0] for s in scored]), np.array([s[1] for s in scored])
        top.scatter(n, v, s=22, color=BLUE, alpha=0.75, label="trial (in-sample)")
        top.plot(n, np.maximum.accumulate(v), drawstyle="steps-post", color=INK, linewidth=2, label="best so far")
    if failed:  # under the lowest score: they have no value, only a place in the sequence
        values = [s[1] for s in scored] or [0.0]
        floor = min(values) - 0.08 * ((max(values) - min(values)) or 1.0)
        top.scatter(failed, [floor] * len(failed), marker="x", s=24, color=GREY, label="failed / pruned")
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_title(f"{title} — {len(scored)} scored, {len(failed)} failed", fontsize=TITLE, color=INK, loc="left")
    top.set_xlabel("trial", fontsize=LABEL, color=INK)
    top.set_ylabel(objective, fontsize=LABEL, color=INK)
    _legend(top, loc="best")
    _style(bottom)
    if importances:
        names = list(importances)[::-1]  # the largest on top
        bottom.barh(names, [importances[k] for k in names], color=BLUE)
        bottom.set_xlabel("importance (PED-ANOVA: what sets the best in-sample trials apart)", fontsize=LABEL,
                          color=INK)
        bottom.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    else:
        bottom.axis("off")
        bottom.text(0.5, 0.5, "importance: too few scored trials", ha="center", va="center", fontsize=NOTE,
                    color=GREY, transform=bottom.transAxes)


def optimization_chart(history: Sequence[tuple[int, float | None]], importances: Mapping[str, float],
                       title: str = "Study", objective: str = "objective") -> bytes:
    return png(draw_optimization, history, importances, title, objective)
