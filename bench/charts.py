"""Chart rendering time, on inputs from a real replay of the shared candles.

    python -m bench.charts

Figure: the median time to render each of the six Telegram charts to PNG (bot/charts.py: Figure API,
Agg canvas, no pyplot), reported for the slowest chart; goal < 1.5 s each. Baseline, measured in the
same run on the same inputs: the same drawing through pyplot (plt.figure / savefig / close), the way
most bots do it, to show the Figure API is not slower.

`replay_inputs()` (also used by tests/unit/test_charts.py) runs the engine with the trader and the
paper broker over two months of two symbols and turns its trades and phantoms into the charts' inputs.
"""

from __future__ import annotations

import functools
import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.data import BINANCE
from bench.table import print_rows
from bot import charts
from core.config import BotConfig
from core.engine import Engine
from core.exchange.paper import PaperBroker
from core.instruments import Instruments
from core.ledger import TradeRecord
from core.market.candle import INTERVAL_MS, dt_to_ms
from core.market.replay import ReplayFeed
from core.market.series import CandleSeries
from core.ml.dataset import build
from core.ml.report import walk_forward_report
from core.phantom import Phantom
from core.stats import daily_pnl, equity_curve
from core.trader import Trader
from storage.candle_files import read_candle_dir

DATA = BINANCE
SYMBOLS = ("BTCUSDT", "ETHUSDT")
START, END = datetime(2021, 1, 1, tzinfo=UTC), datetime(2021, 3, 1, tzinfo=UTC)
ROUNDS = 7
GOAL_S = 1.5


@dataclass
class ReplayInputs:
    config: BotConfig
    series: dict[tuple[str, str], CandleSeries]
    trades: list[TradeRecord]  # closed, in exit order
    opened: list[TradeRecord]  # every open event, as the trader recorded it then
    phantoms: list[Phantom]  # closed
    charts: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)  # name -> args


def replay_inputs(data: Path = DATA, symbols: tuple[str, ...] = SYMBOLS, start: datetime = START,
                  end: datetime = END) -> ReplayInputs:
    loaded = read_candle_dir(data, list(symbols), ["15", "5"])
    window = [s.window(dt_to_ms(start), dt_to_ms(end)) for s in loaded]
    config = BotConfig(id="charts", symbols=list(symbols), slow_interval="15", fast_interval="5")
    instruments = Instruments()
    broker = PaperBroker(instruments, config.capital, slippage_bps=config.slippage_bps,
                         taker_fee_pct=config.taker_fee_pct, watch_interval=config.fast_interval)
    engine = Engine(config, instruments=instruments, trader=Trader(config, instruments, broker, mode="replay"))
    closed: list[Phantom] = []
    trades: list[TradeRecord] = []
    opened: list[TradeRecord] = []
    for candle in ReplayFeed(window).candles():
        result = engine.on_candle(candle)
        closed.extend(result.closed)
        for event in result.ledger:
            (opened if event.kind == "open" else trades).append(event.trade)
    out = ReplayInputs(config, {(s.symbol, s.interval): s for s in window}, trades, opened, closed)

    facts = charts.trade_facts(trades)
    # the ML view: the walk-forward report's out-of-sample calibration for the strategy with most outcomes
    reports = walk_forward_report(build(closed), placebo=False)
    ml = max(reports, key=lambda r: r.model.n).model.charts() if reports else {}
    out.charts = {
        "equity": ((equity_curve(facts, config.capital), config.capital), {}),
        "daily_pnl": ((daily_pnl(facts),), {}),
        "win_rate": ((charts.win_outcomes(closed),), {}),
        "phantom_outcomes": ((closed,), {}),
        "calibration": ((ml.get("calibration", []), ml.get("ev_buckets")), {}),
        "candles": candle_view(out),
    }
    return out


def candle_view(inputs: ReplayInputs, before: int = 150, after: int = 12) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The candle chart as the operator would have seen it a few candles after an entry, that trade
    still open (SL/TP lines) and the symbol's earlier trades closed, on the slow interval; of all the
    entries, the moment with the most closed trades in view."""
    if not inputs.opened:
        return (next(iter(inputs.series.values())), []), {}
    step = INTERVAL_MS[inputs.config.slow_interval]
    exits = {t.id: dt_to_ms(t.exit_time) for t in inputs.trades if t.exit_time is not None}

    def moment(t: TradeRecord) -> tuple[int, list[TradeRecord]]:
        as_of = min(dt_to_ms(t.entry_time) + after * step, exits.get(t.id, 1 << 62) - 1)
        return as_of, [c for c in inputs.trades if c.symbol == t.symbol and as_of - before * step
                       <= exits.get(c.id, 0) < as_of]

    best = max(inputs.opened, key=lambda t: len(moment(t)[1]))
    as_of, shown = moment(best)
    view = inputs.series[(best.symbol, inputs.config.slow_interval)].window(as_of - before * step, as_of)
    return (view, [*shown, best]), {}


def _median_s(fn: Callable[[], Any], rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


DRAW: dict[str, Callable[..., None]] = {
    "equity": charts.draw_equity, "daily_pnl": charts.draw_daily_pnl, "win_rate": charts.draw_win_rate,
    "phantom_outcomes": charts.draw_phantom_outcomes, "calibration": charts.draw_calibration,
    "candles": charts.draw_candles,
}


def _pyplot_png(draw: Callable[..., None], *args: Any, **kwargs: Any) -> bytes:
    """The baseline: the same drawing on a pyplot-managed figure, saved and closed the pyplot way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(charts.WIDTH_PX / charts.DPI, charts.HEIGHT_PX / charts.DPI), dpi=charts.DPI,
                     layout="constrained", facecolor="white")
    draw(fig, *args, **kwargs)
    buf = io.BytesIO()
    plt.savefig(buf, format="png", dpi=charts.DPI, facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def measure(inputs: ReplayInputs | None = None) -> dict[str, tuple[float, float]]:
    """chart -> (median s with bot.charts, median s through pyplot), both on the same inputs."""
    inputs = inputs or replay_inputs()
    out = {}
    for name, (args, kwargs) in inputs.charts.items():
        fn, draw = charts.CHARTS[name], DRAW[name]
        ours = functools.partial(fn, *args, **kwargs)
        theirs = functools.partial(_pyplot_png, draw, *args, **kwargs)
        ours(), theirs()  # warm caches (fonts, tick formatters) before timing either
        out[name] = (_median_s(ours), _median_s(theirs))
    return out


def _row(name: str, figure_s: float, baseline_s: float, goal: str, met: bool) -> dict[str, Any]:
    return {"name": name, "figure": figure_s * 1000, "unit": "ms", "baseline": baseline_s * 1000,
            "ratio": baseline_s / figure_s, "goal": goal, "met": met}


def run(per_chart: dict[str, tuple[float, float]] | None = None) -> list[dict[str, Any]]:
    per_chart = per_chart or measure()
    slowest = max(per_chart, key=lambda k: per_chart[k][0])
    figure, baseline = per_chart[slowest]
    return [_row(f"chart rendered to PNG, median, slowest of {len(per_chart)} ({slowest})", figure, baseline,
                 f"< {GOAL_S * 1000:,.0f} ms each (baseline: same chart via pyplot)",
                 all(f < GOAL_S for f, _ in per_chart.values()))]


if __name__ == "__main__":
    detail = measure()
    print_rows([_row(f"chart: {name}", f, b, f"< {GOAL_S * 1000:,.0f} ms", f < GOAL_S)
                for name, (f, b) in detail.items()], title="bench.charts: each chart (baseline: pyplot)")
    print_rows(run(detail))
