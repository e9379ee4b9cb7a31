"""Strategies as plugins, in one process: the registry's checks, parameters validated against each
strategy's own model, user files loaded or refused with a reason, a failing strategy switched off for
its bot while the others trade, a stored strategy this process cannot run set aside."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import Field, ValidationError

from bot.strategies import load_file
from core.config import BotConfig
from core.engine import Decision, Engine
from core.market.candle import dt_to_ms
from core.market.replay import ReplayFeed
from core.market.series import CandleSeries
from core.strategies import STRATEGIES, Context, Proposal, Regime, SeriesState, StrategyParams, StrategyRefused
from core.strategies.check import check_strategy
from core.trader import Notice
from storage.candle_files import read_candle_dir
from tests.conftest import CANDLES

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]


class ProbeParams(StrategyParams):
    lookback: int = Field(20, ge=5, le=500, description="candles of the channel")
    fail_after: int = Field(0, ge=0, le=1_000_000, description="raise on this call (0: never)")


class Probe:
    """A breakout that raises on its `fail_after`-th call to propose."""

    name = "probe"
    role = "slow"
    Params = ProbeParams

    def __init__(self, params: ProbeParams) -> None:
        self.params = params
        self.calls = 0

    def propose(self, s: SeriesState, ctx: Context) -> Proposal | None:
        self.calls += 1
        if self.calls == self.params.fail_after:
            raise ZeroDivisionError("deliberately")
        c, atr = s.last_candle, s.ind.atr
        if c is None or len(s) <= self.params.lookback or not atr > 0:
            return None
        if c.close > s.last("high", self.params.lookback + 1)[:-1].max():
            return Proposal("long", c.close, c.close - 1.5 * atr, c.close + 3 * atr)
        return None

    def allowed(self, regime: Regime, side: str) -> bool:
        return True


@pytest.fixture
def probe() -> Iterator[None]:
    STRATEGIES.register(Probe, "tests/probe")
    yield
    STRATEGIES.remove("probe")


@pytest.fixture(scope="module")
def month() -> list[CandleSeries]:
    series = read_candle_dir(CANDLES / "binance_spot_2020-12_2021-07", intervals=["15", "5"])
    start = dt_to_ms(datetime(2021, 3, 1, tzinfo=UTC))
    return [s.window(start, start + 20 * 86_400_000) for s in series]


def _run(config: BotConfig, series: list[CandleSeries]) -> tuple[Engine, list[Decision], list[Notice]]:
    engine = Engine(config)
    decisions: list[Decision] = []
    notices: list[Notice] = []
    for candle in ReplayFeed(series).candles():
        result = engine.on_candle(candle)
        decisions += result.decisions
        notices += result.notices
    return engine, decisions, notices


# --- the registry -------------------------------------------------------------------------------------------


def _variant(**members: object) -> type:
    base = {k: v for k, v in vars(Probe).items() if not k.startswith("__") or k == "__init__"}
    return type("Variant", (), {**base, **members})


@pytest.mark.parametrize(("members", "why"), [
    ({"name": "Bad Name"}, "name 'Bad Name'"),
    ({"name": "x" * 33}, "1-32 lowercase"),
    ({"role": "medium"}, "role 'medium'"),
    ({"Params": dict}, "Params must be a pydantic model"),
    ({"Params": type("P", (StrategyParams,), {"__annotations__": {"x": int}})}, "defaults do not validate: x"),
    ({"propose": None}, "no propose() method"),
    ({"allowed": lambda self: True}, "allowed() must take 2 arguments"),
    ({"__init__": lambda self: None}, "constructor must take the parameters"),
], ids=["name", "long-name", "role", "params-not-a-model", "params-without-default", "propose", "allowed",
        "init"])
def test_a_class_that_is_not_a_strategy_is_refused_saying_why(members: dict[str, object], why: str) -> None:
    with pytest.raises(StrategyRefused, match=re.escape(why)):
        STRATEGIES.register(_variant(**members), "tests/variant")
    assert "probe" not in STRATEGIES.names() and "medium" not in str(STRATEGIES.specs())


def test_a_user_strategy_cannot_take_a_builtin_name(probe: None) -> None:
    with pytest.raises(StrategyRefused, match="'scalp' is taken by a built-in strategy"):
        STRATEGIES.register(_variant(name="scalp"), "tests/impostor")
    with pytest.raises(StrategyRefused, match="'probe' is taken by tests/probe"):
        STRATEGIES.register(_variant(), "tests/elsewhere")
    assert STRATEGIES.get("scalp").source == "builtin"  # type: ignore[union-attr]
    assert STRATEGIES.register(Probe, "tests/probe") is STRATEGIES.get("probe")  # the same source: a no-op
    assert STRATEGIES.names()[:3] == ["trend_pullback", "mean_reversion", "scalp"]


# --- parameters --------------------------------------------------------------------------------------------


def test_parameters_are_validated_against_the_strategys_own_model(probe: None) -> None:
    config = BotConfig(id="b", symbols=["BTCUSDT"], strategies={"probe": {"lookback": 30}, "scalp": {}})
    assert isinstance(config.strategies["probe"], ProbeParams) and config.strategies["probe"].lookback == 30
    assert config.model_dump()["strategies"]["probe"]["lookback"] == 30  # dumped as its own model
    with pytest.raises(ValidationError) as caught:
        BotConfig(id="b", symbols=["BTCUSDT"], strategies={"probe": {"lookback": 501, "volume_z": 1},
                                                           "trend_pullback": {"volume_z": 1}})
    got = {(".".join(map(str, e["loc"])), e["msg"]) for e in caught.value.errors()}
    assert got == {("strategies.probe.lookback", "Input should be less than or equal to 500"),
                   ("strategies.probe.volume_z", "Extra inputs are not permitted"),
                   ("strategies.trend_pullback.volume_z", "Extra inputs are not permitted")}


def test_the_builtins_keep_their_defaults() -> None:
    s = BotConfig(id="b", symbols=["BTCUSDT"]).strategies
    assert list(s) == ["trend_pullback", "mean_reversion", "scalp"]
    assert (s["trend_pullback"].reward_risk, s["trend_pullback"].min_stop_atr, s["trend_pullback"].cooldown_candles) \
        == (2.0, 0.8, 4)
    mr = s["mean_reversion"]
    assert (mr.min_stop_atr, mr.max_stop_atr, mr.adx_range, mr.rsi_low, mr.rsi_high) == (0.5, 2.5, 22, 35, 65)
    sc = s["scalp"]
    assert (sc.reward_risk, sc.min_stop_atr, sc.max_stop_atr, sc.cooldown_candles) == (1.5, 0.6, 2.0, 6)


def test_a_stored_strategy_this_process_cannot_run_is_set_aside_and_kept(month: list[CandleSeries]) -> None:
    stored = {"id": "b", "symbols": SYMBOLS, "slow_interval": "15", "fast_interval": "5",
              "strategies": {"gone": {"lookback": 30}, "scalp": {"reward_risk": 0.1}, "trend_pullback": {}}}
    with pytest.raises(ValidationError, match="unknown strategy 'gone'"):
        BotConfig.model_validate(stored)  # a file, a CLI edit: refused
    config = BotConfig.model_validate(stored, context={"stored": True})
    assert list(config.strategies) == ["trend_pullback"]
    assert "not loaded" in config.unloaded["gone"].why
    assert "reward_risk: Input should be greater than 0.2" in config.unloaded["scalp"].why
    saved = config.model_copy(update={"capital": 5000}).strategy_settings()  # a /risk change saves it
    assert saved["gone"] == {"lookback": 30} and saved["scalp"] == {"reward_risk": 0.1}

    _, decisions, notices = _run(config, month)
    assert {n.details["strategy"] for n in notices} == {"gone", "scalp"} and len(notices) == 2
    assert {d.signal.strategy for d in decisions} == {"trend_pullback"}


# --- the engine --------------------------------------------------------------------------------------------


def test_a_strategy_that_raises_is_switched_off_with_one_notice_and_the_others_trade(
        probe: None, month: list[CandleSeries]) -> None:
    strategies = {"probe": {"fail_after": 300}, "trend_pullback": {}, "scalp": {}}
    config = BotConfig(id="b", symbols=SYMBOLS, slow_interval="15", fast_interval="5", strategies=strategies)
    engine = Engine(config)
    decisions: list[Decision] = []
    notices: list[tuple[datetime, Notice]] = []
    for candle in ReplayFeed(month).candles():
        result = engine.on_candle(candle)
        decisions += result.decisions
        notices += [(candle.close_time, n) for n in result.notices]
    assert [(n.kind, n.details["strategy"]) for _, n in notices] == [("strategy_failed", "probe")]
    failed_at, notice = notices[0]
    assert "propose() raised ZeroDivisionError: deliberately" in notice.text and engine.disabled.keys() == {"probe"}
    assert any(d.signal.strategy == "probe" for d in decisions)  # it traded until it failed ...
    assert all(d.signal.time < failed_at for d in decisions if d.signal.strategy == "probe")  # ... and never after
    after = {d.signal.strategy for d in decisions if d.signal.time > failed_at}
    assert after == {"trend_pullback", "scalp"}

    # the built-ins decide exactly as they do without the failing strategy beside them
    alone = BotConfig(id="b", symbols=SYMBOLS, slow_interval="15", fast_interval="5",
                      strategies={"trend_pullback": {}, "scalp": {}})
    assert [d.signal for d in decisions if d.signal.strategy != "probe"] == [d.signal for d in _run(alone, month)[1]]


def test_nonsense_from_a_strategy_switches_it_off(probe: None, month: list[CandleSeries]) -> None:
    nan = _variant(name="nan_levels", propose=lambda self, s, ctx: Proposal("long", float("nan"), 1.0, 2.0))
    STRATEGIES.register(nan, "tests/nan")
    try:
        config = BotConfig(id="b", symbols=SYMBOLS, strategies={"nan_levels": {}, "trend_pullback": {}})
        _, decisions, notices = _run(config, month[:2])
    finally:
        STRATEGIES.remove("nan_levels")
    assert [n.details["strategy"] for n in notices] == ["nan_levels"] and "not finite" in notices[0].text
    assert all(d.signal.strategy == "trend_pullback" for d in decisions)


def test_the_version_is_in_every_signal_and_its_id(probe: None, month: list[CandleSeries]) -> None:
    config = BotConfig(id="b", symbols=SYMBOLS, strategies={"probe": {}})
    _, first, _ = _run(config, month)
    assert first and {d.signal.strategy_version for d in first} == {STRATEGIES.get("probe").version}  # type: ignore[union-attr]
    STRATEGIES.remove("probe")
    STRATEGIES.register(Probe, "tests/probe", version="0" * 12)  # the same code under another version
    _, second, _ = _run(config, month)
    assert [(d.signal.time, d.signal.entry) for d in second] == [(d.signal.time, d.signal.entry) for d in first]
    assert not {d.signal.id for d in first} & {d.signal.id for d in second}


# --- user files ---------------------------------------------------------------------------------------------

BREAKOUT = '''
from pydantic import Field
from core.strategies import Proposal, StrategyParams


class FileParams(StrategyParams):
    lookback: int = Field(20, ge=5, le=500, description="channel")


class FileBreakout:
    name = "file_breakout"
    role = "slow"
    Params = FileParams

    def __init__(self, params):
        self.params = params

    def propose(self, s, ctx):
        return None

    def allowed(self, regime, side):
        return True
'''


@pytest.mark.parametrize(("text", "why"), [
    ("def broken(:\n    pass\n", "cannot import it: SyntaxError: invalid syntax (line 1)"),
    ("x = 1\n\nraise RuntimeError('no data file')\n", "cannot import it: RuntimeError: no data file (line 3)"),
    ("import sys\nsys.exit(3)\n", "cannot import it: SystemExit: 3 (line 2)"),
    ("import no_such_module_here\n", "cannot import it: ModuleNotFoundError: No module named 'no_such_module_here'"),
    ("X = 1\n", "no strategy in it"),
    (BREAKOUT.replace("    Params = FileParams\n", ""), "class FileBreakout: Params must be a pydantic model"),
    (BREAKOUT.replace('"file_breakout"', '"scalp"'), "class FileBreakout: the name 'scalp' is taken by a built-in"),
], ids=["syntax", "raises", "exits", "import", "empty", "no-params", "builtin-name"])
def test_a_bad_file_is_refused_naming_the_file_and_why(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "mine.py"
    path.write_text(text)
    loaded = load_file(path)
    assert not loaded.strategies and len(loaded.refused) == 1
    assert str(loaded.refused[0]).startswith(str(path)) and why in str(loaded.refused[0]), loaded.refused[0]


def test_a_file_registers_with_the_hash_of_its_text(tmp_path: Path) -> None:
    path = tmp_path / "file_breakout.py"
    path.write_text(BREAKOUT)
    try:
        loaded = load_file(path)
        assert not loaded.refused and [s.name for s in loaded.strategies] == ["file_breakout"]
        spec = loaded.strategies[0]
        assert spec.source == str(path.resolve()) and spec.version == hashlib.sha256(BREAKOUT.encode()).hexdigest()[:12]
        assert load_file(path).strategies[0] is spec  # loaded twice: the same registration
        path.write_text(BREAKOUT + "# edited\n")
        assert load_file(path).strategies[0].version != spec.version  # the same file, changed: its new version
    finally:
        STRATEGIES.remove("file_breakout")


def test_check_passes_a_clean_strategy_and_reports_one_that_raises(probe: None) -> None:
    clean = check_strategy(STRATEGIES.get("probe"), days=3)  # type: ignore[arg-type]
    assert clean.ok and clean.signals["long"] > 0 and clean.cuts == clean.signals["long"]
    failing = check_strategy(STRATEGIES.get("probe"), ProbeParams(fail_after=50), days=3)  # type: ignore[arg-type]
    assert not failing.ok and "ZeroDivisionError" in (failing.failed or "")
