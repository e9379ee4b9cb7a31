"""The pure parts of `optimize`, in one process: the search space never leaves a field's declared bounds, the
walk-forward windows tile the period without an in-sample window touching an out-of-sample one, a trial's
objective never shows a strategy an out-of-sample candle, and a window is the replay's own engine."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import annotated_types as at
import optuna
import pytest
from pydantic import Field

from bot.optimize import BOT_ID, StudySpec, TrialObjective
from core.config import BotConfig
from core.funding import FundingSchedule
from core.ledger import MemoryLedger, ledger_digest
from core.market.candle import INTERVAL_MS, Candle, dt_to_ms
from core.market.replay import WARMUP_CANDLES, ReplayFeed, history_before
from core.optimize.evaluate import Market, WindowReplayer
from core.optimize.space import BOT_PREFIX, SETTINGS, SpaceError, space_of
from core.optimize.windows import WalkForward, Window, WindowError, walk_forward
from core.persistence import MemoryStore
from core.runner import paper_engine, run
from core.strategies import STRATEGIES, Context, Proposal, Regime, SeriesState, StrategyParams
from core.strategies.params import Search
from storage.candle_files import read_candle_dir
from tests.conftest import CANDLES

DAY = 86_400_000
START = dt_to_ms(datetime(2021, 3, 1, tzinfo=UTC))
STEP = INTERVAL_MS["15"]


# --- the search space ---------------------------------------------------------------------------------------
class Wide(StrategyParams):
    """Unnarrowed fields of every kind, exclusive bounds included."""

    ratio: float = Field(0.5, gt=0, lt=1)
    count: int = Field(3, gt=0, lt=10)
    flag: bool = False
    mode: Literal["fast", "slow", "off"] = "fast"
    free: float = 1.0  # no bounds: cannot be searched
    search_space: ClassVar[dict[str, Search]] = {}


def _within(value: Any, info: Any) -> bool:
    for m in info.metadata:
        if (isinstance(m, at.Ge) and not value >= m.ge) or (isinstance(m, at.Gt) and not value > m.gt) \
                or (isinstance(m, at.Le) and not value <= m.le) or (isinstance(m, at.Lt) and not value < m.lt):
            return False
    return True


def _sampled(params: type[StrategyParams], settings: list[str], sampler: optuna.samplers.BaseSampler,
             n: int) -> list[dict[str, Any]]:
    space = space_of(params, settings, ml=True)
    study = optuna.create_study(sampler=sampler)
    out: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        c = space.suggest(trial)
        out.append({**c.params, **{BOT_PREFIX + k: v for k, v in c.settings.items()}})
        return float(len(out) % 7)  # something for TPE to model

    study.optimize(objective, n_trials=n)
    return out


@pytest.mark.parametrize("model", [s.params for s in STRATEGIES.specs()] + [Wide],
                         ids=[s.name for s in STRATEGIES.specs()] + ["wide"])
def test_no_value_outside_its_declared_bounds_is_ever_sampled(model: type[StrategyParams]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    samples = _sampled(model, list(SETTINGS), optuna.samplers.RandomSampler(seed=1), 200)
    samples += _sampled(model, list(SETTINGS), optuna.samplers.TPESampler(seed=1, n_startup_trials=5), 30)
    fields = {**model.model_fields, **{BOT_PREFIX + k: v for k, v in BotConfig.model_fields.items()}}
    for values in samples:
        for name, value in values.items():
            assert _within(value, fields[name]), f"{name}={value} is outside {fields[name].metadata}"
    if model is Wide:  # no rule between its fields: every sample is a valid model
        for values in samples:
            Wide.model_validate({k: v for k, v in values.items() if not k.startswith(BOT_PREFIX)})
        assert {s["flag"] for s in samples} == {False, True} and {s["mode"] for s in samples} == {"fast", "slow", "off"}
        assert min(s["ratio"] for s in samples) > 0 and max(s["ratio"] for s in samples) < 1
        assert {s["count"] for s in samples} <= set(range(1, 10))
        assert "free" not in samples[0] and "free" in space_of(Wide).fixed


@pytest.mark.parametrize(("narrow", "why"), [
    ({"ratio": Search(0.0, 0.5)}, "leaves its declared bounds"),  # 0 is excluded (gt=0)
    ({"count": Search(1, 10)}, "leaves its declared bounds"),  # 10 is excluded (lt=10)
    ({"ratio": Search(0.6, 0.4)}, "leaves its declared bounds"),
    ({"mode": Search(choices=("fast", "turbo"))}, "not among its declared"),
    ({"count": Search(1, 5, step=0.5)}, "must be positive and whole"),
    ({"nothing": Search(1, 2)}, "not one of its fields"),
])
def test_a_narrowing_beyond_the_bounds_is_refused(narrow: dict[str, Search], why: str) -> None:
    model = type("Narrowed", (Wide,), {"search_space": narrow, "__annotations__": {}})
    with pytest.raises(SpaceError, match=why):
        space_of(model)


def test_bot_settings_are_named_explicitly_and_ml_ones_need_ml() -> None:
    params = STRATEGIES.get("scalp").params  # type: ignore[union-attr]
    with pytest.raises(SpaceError, match="not a searchable bot setting"):
        space_of(params, ["taker_fee_pct"])
    with pytest.raises(SpaceError, match="add --ml"):
        space_of(params, ["ml_threshold"])
    for name, narrow in SETTINGS.items():  # every range inside BotConfig's own bounds (refused at import otherwise)
        dim = next(d for d in space_of(params, [name], ml=True).dimensions if d.name == BOT_PREFIX + name)
        assert (dim.low, dim.high) == (narrow.low, narrow.high)


# --- the windows --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["rolling", "anchored"])
@pytest.mark.parametrize(("days", "k", "oos"), [(30, 4, 0.25), (31.3, 3, 0.4), (10, 1, 0.3)])
def test_windows_tile_the_period_and_in_sample_is_never_warmed_on_out_of_sample(
        scheme: Literal["rolling", "anchored"], days: float, k: int, oos: float) -> None:
    end = START + round(days * DAY / STEP) * STEP
    walk = walk_forward(START, end, k, oos, scheme, STEP)
    ws = walk.windows
    assert ws[0].start_ms == START and ws[-1].end_ms == end
    assert all(a.end_ms == b.start_ms for a, b in itertools.pairwise(ws))  # consecutive, disjoint
    assert all(w.start_ms % STEP == 0 and w.end_ms % STEP == 0 for w in ws)
    assert len(walk.in_sample) == len(walk.out_of_sample) == k
    for w in walk.in_sample:
        before = [o for o in walk.out_of_sample if o.end_ms <= w.start_ms]
        assert w.warm_from_ms == (max(o.end_ms for o in before) if before else None)
    share = sum(w.end_ms - w.start_ms for w in walk.out_of_sample) / (end - START)
    assert share == pytest.approx(oos, abs=2 * k * STEP / (end - START))
    if scheme == "anchored":
        assert max(w.end_ms for w in walk.in_sample) <= min(w.start_ms for w in walk.out_of_sample)


def test_windows_under_a_day_are_refused() -> None:
    with pytest.raises(WindowError, match="under a day"):
        walk_forward(START, START + 3 * DAY, 4, 0.25, "rolling", STEP)


# --- trials over real candles ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def market() -> Market:
    series = read_candle_dir(CANDLES / "binance_spot_2020-12_2021-07", ["BTCUSDT", "ETHUSDT"], ["15", "5"])
    return Market(tuple(series), FundingSchedule(), "15", "5")


SEEN: list[int] = []  # close times (ms) Peek was asked about


class PeekParams(StrategyParams):
    stop_atr: float = Field(1.5, ge=0.5, le=3.0)


class Peek:
    """Takes a long on every 8th candle it is shown, and writes down when it was asked."""

    name = "peek"
    role = "fast"
    Params = PeekParams

    def __init__(self, params: PeekParams) -> None:
        self.params = params

    def propose(self, s: SeriesState, ctx: Context) -> Proposal | None:
        c = s.last_candle
        assert c is not None
        SEEN.append(c.open_ms + s.step_ms)
        atr = s.ind.atr
        if len(SEEN) % 8 or not atr > 0:
            return None
        return Proposal("long", c.close, c.close - self.params.stop_atr * atr, c.close + 2 * atr)

    def allowed(self, regime: Regime, side: str) -> bool:
        return True


@pytest.fixture
def peek() -> Iterator[None]:
    STRATEGIES.register(Peek, "tests/peek")
    SEEN.clear()
    yield
    STRATEGIES.remove("peek")


def _spec(walk: WalkForward, strategy: str) -> StudySpec:
    return StudySpec(strategy=strategy, strategy_version=STRATEGIES.get(strategy).version,  # type: ignore[union-attr]
                     symbols=["BTCUSDT", "ETHUSDT"], intervals=("15", "5"), start="2021-03-01T00:00:00+00:00",
                     end="2021-03-09T00:00:00+00:00", data="-", scheme=walk.scheme, windows=len(walk.in_sample),
                     oos_fraction=0.25, objective="expectancy", min_trades=1, search=[], ml=False)


@pytest.mark.parametrize("scheme", ["rolling", "anchored"])
def test_a_trial_shows_its_strategy_no_out_of_sample_candle(peek: None, market: Market,
                                                            scheme: Literal["rolling", "anchored"]) -> None:
    walk = walk_forward(START, START + 8 * DAY, 2, 0.25, scheme, STEP)
    base = BotConfig(id=BOT_ID, symbols=market.symbols, strategies={"peek": {}})
    objective = TrialObjective(_spec(walk, "peek"), space_of(PeekParams), walk, base, WindowReplayer(market), "t")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    study.optimize(objective, n_trials=3)
    assert SEEN and all(any(w.start_ms < t <= w.end_ms for w in walk.in_sample) for t in SEEN)
    assert not any(w.start_ms < t <= w.end_ms for t in SEEN for w in walk.out_of_sample)
    assert all(t.user_attrs["outcome"]["in_sample"]["trades"] > 0 for t in study.trials)


def test_a_window_warmed_from_the_cache_is_the_window_warmed_itself(market: Market) -> None:
    """A trial starts from a copy of the window's warmed market state: the same trades as the replay's engine
    warmed on the candles before the window (tests/e2e/test_optimize.py compares with `replay` itself)."""
    window = Window(1, "in", START + 2 * DAY, START + 6 * DAY, None)
    config = BotConfig(id=BOT_ID, symbols=market.symbols)
    replayer = WindowReplayer(market)
    first, again = replayer.run(config, window), replayer.run(config, window)

    engine, _ = paper_engine(config, market.funding)
    ledger = MemoryLedger()

    async def stream() -> AsyncIterator[Candle]:
        for candle in ReplayFeed(list(market.series), start_ms=window.start_ms, end_ms=window.end_ms).candles():
            yield candle

    asyncio.run(run(engine, stream(), MemoryStore(), ledger=ledger,
                    history=history_before(market.series, window.start_ms, WARMUP_CANDLES)))
    assert first.trades and ledger_digest(first.trades) == ledger_digest(again.trades) == \
        ledger_digest(ledger.closed())
    risks = [t.risk for t in first.closed.trades]
    assert all(r is not None and r > 0 for r in risks) and not math.isnan(float(sum(risks)))  # type: ignore[arg-type]

