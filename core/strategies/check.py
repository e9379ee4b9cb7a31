"""`strategies check`: one strategy through the real engine over a seeded synthetic market, its signals
counted per side, then a look-ahead test by truncation.

The engine only shows a strategy what has closed, so a decision can depend on later candles only through
state kept around the engine: a module-level cache filled by an earlier run, data read by the strategy
itself. The test re-runs a fresh engine on the market cut right after each signal's candle: the
proposal at that candle must be the same one. Every difference is reported. Each cut is a whole run, so
at most `max_cuts` signals, evenly spread, are re-run (the report says how many).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.config import BotConfig
from core.engine import Engine
from core.market.candle import Candle
from core.market.replay import ReplayFeed, sort_key
from core.market.synthetic import DEFAULT_SYMBOLS, synthetic_series
from core.signal import Signal
from core.strategies.params import StrategyParams
from core.strategies.registry import StrategySpec

START = datetime(2026, 1, 1, tzinfo=UTC)
SYMBOLS = 3  # BTC (the regime gate's reference), ETH, SOL
MAX_CUTS = 100
INTERVALS = ("15", "5")


@dataclass(frozen=True, slots=True)
class LookAhead:
    signal: Signal  # as proposed with the whole market
    truncated: Signal | None  # at the same candle, the market cut right after it

    def __str__(self) -> str:
        s, t = self.signal, self.truncated
        cut = "no signal" if t is None else f"{t.side} {t.entry}/{t.stop_loss}/{t.take_profit}"
        return (f"{s.symbol} {s.interval} at {s.time:%Y-%m-%d %H:%M} UTC: whole market {s.side} {s.entry}/"
                f"{s.stop_loss}/{s.take_profit}, cut at that candle {cut}")


@dataclass
class CheckReport:
    name: str
    version: str
    candles: int
    signals: dict[str, int] = field(default_factory=lambda: {"long": 0, "short": 0})
    failed: str | None = None  # the engine switched the strategy off: why
    cuts: int = 0  # signals re-run on the market cut after their candle
    look_ahead: list[LookAhead] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed is None and not self.look_ahead


def _market(days: float, seed: int) -> list[Candle]:
    series = synthetic_series(DEFAULT_SYMBOLS[:SYMBOLS], INTERVALS, START, days, seed)
    return list(ReplayFeed(series).candles())


def _run(config: BotConfig, candles: list[Candle]) -> tuple[list[tuple[tuple[int, int, str], Signal]], Engine]:
    engine = Engine(config)
    out: list[tuple[tuple[int, int, str], Signal]] = []
    for candle in candles:
        out.extend((sort_key(candle), d.signal) for d in engine.on_candle(candle).decisions)
    return out, engine


def check_strategy(spec: StrategySpec, params: StrategyParams | None = None, *, days: float = 7, seed: int = 7,
                   max_cuts: int = MAX_CUTS) -> CheckReport:
    params = params if params is not None else spec.params()
    config = BotConfig(id="check", symbols=[s.symbol for s in DEFAULT_SYMBOLS[:SYMBOLS]],
                       slow_interval=INTERVALS[0], fast_interval=INTERVALS[1], strategies={spec.name: params})
    candles = _market(days, seed)
    signals, engine = _run(config, candles)
    report = CheckReport(spec.name, spec.version, len(candles), failed=engine.disabled.get(spec.name))
    for _, s in signals:
        report.signals[s.side] += 1
    if report.failed is not None:
        return report
    keys = [sort_key(c) for c in candles]
    n = len(signals)
    picks = signals if n <= max_cuts else [signals[round(i * (n - 1) / (max_cuts - 1))] for i in range(max_cuts)]
    report.cuts = len(picks)
    for key, signal in picks:
        cut = keys.index(key) + 1
        again, _ = _run(config, candles[:cut])
        truncated = next((s for k, s in again if k == key and s.symbol == signal.symbol), None)
        if truncated != signal:
            report.look_ahead.append(LookAhead(signal, truncated))
    return report
