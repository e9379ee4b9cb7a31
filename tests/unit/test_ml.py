"""The ML filter, pure parts: dataset and labels, time order and leakage, calibration, EV and the
decision rule, the unscored state, the champion/challenger gate, artifacts and their signatures,
the scorer's state across a restart, and retraining off the event loop."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from core.ml import artifact, metrics
from core.ml.artifact import ArtifactRefused, dumps, load_verified, parse, sign, verify
from core.ml.dataset import FEATURE_NAMES, N_FEATURES, Dataset, build, feature_vector, label
from core.ml.filter import DAY_MS, FilterSettings, MLScorer, Trained
from core.ml.gate import Candidate, WalkForward, retrain, walk_forward
from core.ml.model import Model
from core.ml.recipe import Recipe, TrainConfig
from core.ml.registry import ChampionLoad, MemoryRegistry, ModelArtifact
from core.ml.train import train
from core.ml.verdict import worth_asking
from core.phantom import Phantom
from core.signal import Signal
from tests.fakes.clock import wait_until

T0 = datetime(2024, 1, 1, tzinfo=UTC)
KEY = b"k" * 40


# --- synthetic data -------------------------------------------------------------------------------
def features(x: np.ndarray, rr: float = 2.0) -> dict[str, float]:
    f = {name: float(v) for name, v in zip(FEATURE_NAMES, x, strict=True)}
    f["reward_risk"] = rr
    return f


def phantom(i: int, *, y: int | None = None, r: float | None = None, outcome: str | None = None,
            exit_reason: str | None = None, strategy: str = "trend_pullback", x: np.ndarray | None = None,
            opened: datetime | None = None, hold: timedelta = timedelta(minutes=30), action: str = "EXECUTED",
            ml_score: float | None = None, status: str = "closed") -> Phantom:
    """A closed phantom with RR 2: win → +2R (tp), loss → -1R (sl), or an explicit outcome/R."""
    opened = opened or T0 + timedelta(hours=i)
    x = np.zeros(N_FEATURES) if x is None else x
    p = Phantom(f"p{i:06d}", "b", "BTCUSDT", "15", strategy, "long", Decimal(100), Decimal(99), Decimal(102), opened,
                action, None, ml_score, None, features(x))
    if status == "closed":
        p.status = "closed"
        p.outcome = outcome or ("win" if y else "loss")
        p.exit_reason = exit_reason or {"win": "tp", "loss": "sl"}.get(p.outcome, "timeout")
        p.realized_r = r if r is not None else (2.0 if p.outcome == "win" else -1.0)
        p.exit_time = opened + hold
    return p


def signal_data(n: int, strength: float, seed: int, strategy: str = "trend_pullback",
                start: int = 0) -> list[Phantom]:
    """Outcomes whose win probability rises with feature 0 (strength 0: pure noise)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    p_win = 1 / (1 + np.exp(-(np.log(0.38 / 0.62) + strength * X[:, 0])))
    y = (rng.random(n) < p_win).astype(int)
    return [phantom(start + i, y=int(y[i]), x=X[i], strategy=strategy) for i in range(n)]


def dataset(phantoms: list[Phantom]) -> Dataset:
    return next(iter(build(phantoms).values()))


def a_signal(i: int, x: np.ndarray, strategy: str = "trend_pullback", rr: float = 2.0) -> Signal:
    return Signal(f"s{i}", "b", "BTCUSDT", "15", strategy, "long", Decimal(100), Decimal(99), Decimal(100 + rr),
                  T0 + timedelta(days=400, hours=i), features(x, rr))


# --- dataset ----------------------------------------------------------------------------------------
def test_labels_wins_losses_timeouts_and_gaps() -> None:
    assert label(phantom(0, y=1)) == 1
    assert label(phantom(1, y=0)) == 0
    assert label(phantom(2, outcome="timeout", r=0.4)) == 1  # timeout: by the sign of R
    assert label(phantom(3, outcome="timeout", r=-0.3)) == 0
    assert label(phantom(4, outcome="timeout", r=0.0)) == 0  # zero R is not a win
    assert label(phantom(5, outcome="timeout", exit_reason="gap", r=1.5)) is None  # unknown inside a gap
    assert label(phantom(6, status="active")) is None
    data = build([phantom(i, y=i % 2) for i in range(4)] + [
        phantom(10, outcome="timeout", exit_reason="gap", r=1.0), phantom(11, status="active"),
        phantom(12, y=1, strategy="scalp")])
    assert set(data) == {"trend_pullback", "scalp"}
    assert len(data["trend_pullback"]) == 4 and data["trend_pullback"].y.tolist() == [0, 1, 0, 1]
    assert data["trend_pullback"].r.tolist() == [-1.0, 2.0, -1.0, 2.0]


def test_features_in_the_documented_order() -> None:
    f = {name: float(i) for i, name in enumerate(FEATURE_NAMES)}
    assert feature_vector(f).tolist() == [float(i) for i in range(N_FEATURES)]
    missing = feature_vector({})
    assert missing[FEATURE_NAMES.index("strategy_win_rate")] == 0.5 and missing[0] == 0.0
    assert N_FEATURES == 38


def test_rows_are_ordered_by_exit_time_then_id() -> None:
    rows = [phantom(3, y=1, hold=timedelta(hours=6)),  # exits at 9h
            phantom(5, y=0, hold=timedelta(hours=2)),  # exits at 7h ...
            phantom(4, y=1, hold=timedelta(hours=3)),  # ... like this one: the id decides
            phantom(1, y=0, hold=timedelta(minutes=10))]
    data = dataset(rows)
    assert data.ids == ("p000001", "p000004", "p000005", "p000003")
    assert data.y.tolist() == [0, 1, 0, 1]
    assert np.all(np.diff(data.exit_ms) >= 0)


def test_walk_forward_folds_never_train_on_the_future() -> None:
    rng = np.random.default_rng(3)
    # overlapping trades: a test row may open before some training rows exit (those must be purged)
    rows = [phantom(i, y=int(rng.random() < 0.4), opened=T0 + timedelta(minutes=20 * i),
                    hold=timedelta(minutes=int(rng.integers(5, 600)))) for i in range(300)]
    data = dataset(rows)
    folds = WalkForward().splits(data)
    assert len(folds) == 5
    for fold in folds:
        assert data.exit_ms[:fold.train_end].max() <= fold.as_of_ms  # every training label was known
        assert data.opened_ms[fold.test].min() >= fold.as_of_ms  # every test signal came after
    sizes = [len(f.test) for f in folds]
    assert sum(sizes) < len(data) // 2  # some rows in flight at the cuts were purged


def test_later_labels_cannot_change_earlier_predictions() -> None:
    """No leakage: scrambling the outcomes of the last test slice leaves every earlier slice's
    predictions untouched."""
    data = dataset(signal_data(240, 1.5, seed=4))
    folds = WalkForward().splits(data)
    last = folds[-1].test
    y = data.y.copy()
    y[last] = 1 - y[last]
    a = walk_forward(data, [Candidate("m", Recipe())])["m"]
    b = walk_forward(data.with_labels(y), [Candidate("m", Recipe())])["m"]
    earlier = len(a.p) - len(last)
    assert np.array_equal(a.p[:earlier], b.p[:earlier])


def test_calibration_slice_is_purged_and_predictions_are_probabilities() -> None:
    data = dataset(signal_data(400, 1.5, seed=5))
    model = train(data)
    assert model.meta["n_fit"] == 300 and 0 < model.n_cal <= 100
    X = np.random.default_rng(0).normal(scale=50.0, size=(500, N_FEATURES))  # far outside the training range
    p = model.predict(X)
    assert np.all((p >= 0) & (p <= 1))
    raw = np.linspace(0, 1, 101)
    assert np.all(np.diff(model.calibrate(raw)) >= 0)  # isotonic: monotone in the raw score
    # shrinkage: even a perfect-looking raw score stays short of certainty
    assert model.calibrate(np.array([1.0]))[0] < 1.0


def test_training_is_deterministic_and_survives_serialization() -> None:
    data = dataset(signal_data(300, 1.0, seed=6))
    a, b = train(data), train(data)
    X = data.X[:50]
    assert np.array_equal(a.predict(X), b.predict(X))
    again = parse(dumps(a))
    assert np.array_equal(again.predict(X), a.predict(X))
    assert [a.predict_one(x) for x in X[:5]] == list(a.predict(X[:5]))


# --- EV and the decision ---------------------------------------------------------------------------
def test_ev_formula_and_lift() -> None:
    assert metrics.expected_value(0.5, 2.0) == pytest.approx(0.5)
    assert metrics.expected_value(0.25, 3.0) == pytest.approx(0.0)
    assert metrics.expected_value(0.2, 1.5) == pytest.approx(-0.5)
    r = np.array([2.0, -1.0, -1.0, 2.0])
    assert metrics.ev_lift(r, np.array([True, False, False, True])) == pytest.approx(2.0 - 0.5)
    assert metrics.ev_lift(r, np.ones(4, bool)) == 0.0
    assert metrics.ev_lift(r, np.zeros(4, bool)) == pytest.approx(-0.5)  # no trades: expectancy 0
    assert metrics.accepts(np.array([0.3, 0.4]), np.array([2.0, 2.0]), 0.0, 0.35).tolist() == [False, True]


def constant_model(p: float) -> Model:
    return Model(None, np.array([0.0, 1.0]), np.array([p, p]), 0, p, 100.0, meta={"features": list(FEATURE_NAMES)})


def test_decision_threshold_and_floor() -> None:
    x = np.zeros(N_FEATURES)
    for threshold, min_p, take in [(0.2, 0.0, True), (0.21, 0.0, False), (0.0, 0.41, False), (0.0, 0.4, True)]:
        scorer = MLScorer("b", FilterSettings(threshold=threshold, min_p=min_p))
        scorer.adopt("trend_pullback", constant_model(0.4), 7)
        s = scorer.score(a_signal(0, x, rr=2.0))  # EV = 0.4 * 2 - 0.6 = 0.2
        assert s.p_win == pytest.approx(0.4) and s.ev_r == pytest.approx(0.2) and s.model_version == 7
        assert s.take is take, (threshold, min_p, s.reason)
    assert "floor" in MLScorer("b", FilterSettings(min_p=0.41)).adopt(
        "trend_pullback", constant_model(0.4), 7).score(a_signal(0, x)).reason


def test_unscored_before_the_minimum_samples() -> None:
    scorer = MLScorer("b", FilterSettings(min_samples=30, retrain_every=50, effect_delay_ms=DAY_MS))
    rows = signal_data(30, 1.5, seed=7)
    for p in rows[:29]:
        scorer.observe(p)
    s = scorer.score(a_signal(0, np.zeros(N_FEATURES)))
    assert s.take and s.p_win is None and s.ev_r is None and "29/30" in s.reason
    assert scorer.pending == [] and scorer.stats()["trend_pullback"]["outcomes_until_retrain"] == 1
    assert scorer.stats()["trend_pullback"]["status"].startswith("unscored")
    scorer.observe(phantom(99, outcome="timeout", exit_reason="gap", r=1.0))  # not an outcome to learn from
    assert scorer.pending == []
    scorer.observe(rows[29])
    assert scorer.pending == []  # due: launched once the candle that closed it is complete ...
    scorer.score(a_signal(24, np.zeros(N_FEATURES)))  # ... (a later candle), in force a market day later
    assert [t.version for t in scorer.pending] == [30]  # the first training, at exactly 30 outcomes
    assert not scorer.pending[0].promoted and "not enough evidence yet" in scorer.pending[0].report["why"]
    assert scorer.pending[0].artifact is None  # nothing fitted, nothing serialized
    assert scorer.stats()["trend_pullback"]["outcomes_until_retrain"] == 50


# --- the gate ----------------------------------------------------------------------------------------
def test_gate_promotes_a_model_that_beats_no_model() -> None:
    data = dataset(signal_data(500, 1.5, seed=8))
    result = retrain(data, version=500)
    assert result.promoted, result.report["why"]
    ch, base, ev = result.report["challenger"], result.report["base_rate"], result.report["evidence"]
    assert ch["brier"] < base["brier"] and ch["lift_r"] > 0
    assert ev["lift_lo"] > 0 and ev["skill_lo"] > 0 and ev["n"] >= ev["min_outcomes"]  # what it rested on
    assert result.artifact is not None and result.model is not None
    assert result.report["folds"] and result.report["calibration"] and result.report["ev_buckets"]
    assert result.report["importances"][0][0] == FEATURE_NAMES[0]  # the informative one


def test_gate_refuses_a_shuffled_label_challenger_and_keeps_the_champion() -> None:
    rows = signal_data(500, 1.5, seed=9)
    champion = retrain(dataset(rows[:400]), version=400)
    assert champion.promoted
    scorer = MLScorer("b", FilterSettings(min_samples=30, retrain_every=100,
                                          recipe=Recipe(shuffle_labels=True)))  # a challenger that learns nothing
    state = {"v": 2, "key": None, "strategies": {"trend_pullback": {
        "n": 400, "trained_n": 400, "champion": 400, "in_force_ms": 0, "champion_report": champion.report}}}
    scorer.resume(state, rows[:400], {"trend_pullback": ChampionLoad(champion.model, 400)})
    for p in rows[400:]:
        scorer.observe(p)
    scorer.score(a_signal(0, np.zeros(N_FEATURES)))  # days later: the verdict is in force
    assert [t.version for t in scorer.pending] == [500]
    refused = scorer.pending[0]
    assert not refused.promoted and refused.artifact is None
    assert refused.report["challenger"]["brier"] > refused.report["champion"]["brier"]
    assert scorer.stats()["trend_pullback"]["version"] == 400  # the champion stays
    assert scorer.score(a_signal(1, np.ones(N_FEATURES))).model_version == 400


def test_gate_promotes_a_genuinely_better_challenger_over_a_weak_champion() -> None:
    rows = signal_data(600, 1.5, seed=10)
    weak = Recipe(shuffle_labels=True).fit(dataset(rows[:300]))  # an operator's "promote anyway"
    better = retrain(dataset(rows), version=600, champion=weak, champion_version=300)
    assert better.promoted, better.report["why"]
    assert better.report["challenger"]["brier"] <= better.report["champion"]["brier"]


def test_the_same_recipe_with_more_data_is_judged_on_the_folds_it_differs() -> None:
    rows = signal_data(400, 1.5, seed=11)
    first = retrain(dataset(rows[:350]), version=350)
    second = retrain(dataset(rows), version=400, champion=first.model, champion_version=350)
    folds = second.report["folds"]
    # slices before the champion's cutoff: the champion "as of" then is the challenger's own fold model
    assert {k: folds[0]["challenger"][k] for k in folds[0]["champion"]} == folds[0]["champion"]
    ev = second.report["evidence"]
    assert second.promoted is (ev["lift_lo"] > 0 and ev["skill_lo"] > 0 and
                               second.report["challenger"]["brier"] <= second.report["champion"]["brier"] and
                               second.report["challenger"]["lift_r"] >= second.report["champion"]["lift_r"])


# --- artifacts -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model() -> Model:
    return train(dataset(signal_data(200, 1.0, seed=12)))


def test_signed_artifacts_verify_and_tampered_ones_are_refused(small_model: Model,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = dumps(small_model)
    assert dumps(small_model) == data  # the same model, the same bytes
    digest, mac = sign(KEY, "b", "scalp", 3, data)
    verify(KEY, "b", "scalp", 3, data, digest, mac)
    parsed: list[bytes] = []
    monkeypatch.setattr(artifact, "parse", lambda b: parsed.append(b) or parse(b))
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    bad = [
        (bytes(flipped), digest, mac, "sha256"),  # one flipped byte
        (data, digest, sign(b"x" * 40, "b", "scalp", 3, data)[1], "signature"),  # another key
        (data, digest, "", "unsigned"),
        (data, *sign(KEY, "b", "scalp", 4, data), "signature"),  # signed for another version: moved
    ]
    for blob, d, m, why in bad:
        with pytest.raises(ArtifactRefused, match=why):
            load_verified(KEY, "b", "scalp", 3, blob, d, m)
    assert parsed == []  # nothing reached the parser before verification
    model = load_verified(KEY, "b", "scalp", 3, data, digest, mac)
    assert parsed and np.array_equal(model.predict(np.zeros((3, N_FEATURES))), small_model.predict(np.zeros((3, 38))))


def _zip(entries: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, blob in entries.items():
            z.writestr(name, blob)
    return out.getvalue()


def test_unexpected_content_in_a_signed_artifact_is_refused(small_model: Model) -> None:
    import io
    import pickle
    import zipfile

    with zipfile.ZipFile(io.BytesIO(dumps(small_model))) as z:
        good = {name: z.read(name) for name in z.namelist()}
    objects = io.BytesIO()
    np.save(objects, np.array([print], dtype=object), allow_pickle=True)  # a pickled callable
    cases = [({**good, "evil.pkl": pickle.dumps(print)}, "unexpected entries: evil.pkl"),
             ({**good, "iso_x.npy": objects.getvalue()}, "not a model"),
             ({**good, "model.json": b"{not json"}, "not a model"),
             ({**good, "left.npy": _npy(np.full_like(small_model.trees.left, 10**6))}, "outside its tree"),  # type: ignore[union-attr]
             (b"not a zip", "not a model")]
    for entries, why in cases:
        blob = entries if isinstance(entries, bytes) else _zip(entries)
        digest, mac = sign(KEY, "b", "s", 1, blob)  # signed: only the parser stands in the way
        with pytest.raises(ArtifactRefused, match=why):
            load_verified(KEY, "b", "s", 1, blob, digest, mac)
    assert load_verified(KEY, "b", "s", 1, _zip(good), *sign(KEY, "b", "s", 1, _zip(good))).trees is not None


def _npy(a: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    np.save(out, a, allow_pickle=False)
    return out.getvalue()


async def test_memory_registry_falls_back_to_the_previous_champion(small_model: Model) -> None:
    reg = MemoryRegistry(KEY)
    for v in (1, 2):
        await reg.save(ModelArtifact("b", "scalp", v, T0, 200, {}, dumps(small_model)))
        await reg.set_champion("b", "scalp", v)
    assert (await reg.load_champion("b", "scalp")).version == 2
    reg.rows[("b", "scalp", 2)].data += b"\x00"
    load = await reg.load_champion("b", "scalp")
    assert load.version == 1 and load.model is not None and "sha256" in load.refused[0]
    reg.rows[("b", "scalp", 1)].hmac = ""
    assert (await reg.load_champion("b", "scalp")).model is None  # no model: signals go unscored


# --- the scorer across a restart -----------------------------------------------------------------------
async def test_state_and_resume_rebuild_the_same_scorer() -> None:
    rows = signal_data(260, 1.5, seed=13)
    settings = FilterSettings(min_samples=60, retrain_every=100, effect_delay_ms=DAY_MS)
    reg = MemoryRegistry(KEY)
    whole = MLScorer("b", settings)
    for p in rows[:200]:
        whole.observe(p)
    await whole.flush(reg, notify_refusals=False)
    state = whole.state()
    assert state["strategies"]["trend_pullback"]["trained_n"] == 160
    champions = {name: await reg.load_champion("b", name, version=v)
                 for name, v in MLScorer.champions_in(state).items()}
    resumed = MLScorer("b", settings)
    resumed.resume(state, rows[:200][::-1], champions)  # arrival order does not matter
    for p in rows[200:]:
        whole.observe(p)
        resumed.observe(p)
    assert resumed.state() == whole.state()
    probe = [a_signal(i, np.random.default_rng(i).normal(size=N_FEATURES)) for i in range(20)]
    assert [resumed.score(s) for s in probe] == [whole.score(s) for s in probe]
    assert resumed.stats() == whole.stats()


# --- live: retraining off the event loop -------------------------------------------------------------
async def test_retrain_in_a_process_pool_keeps_the_event_loop_responsive() -> None:
    heavy = Recipe(TrainConfig(iterations=400, max_depth=5))  # long enough to watch the loop during it
    scorer = MLScorer("b", FilterSettings(inline=False, min_samples=30, retrain_every=50, recipe=heavy))
    for p in signal_data(4000, 1.0, seed=14):
        scorer.observe(p)
    assert scorer.pending == [] and scorer.due() == ["trend_pullback"]  # deferred: nothing trained inline

    async def ticker(lags: list[float], stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            start = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - start - 0.01)

    reg = MemoryRegistry(KEY)
    lags: list[float] = []
    stop = asyncio.Event()
    with ProcessPoolExecutor(max_workers=1) as pool:
        await asyncio.get_running_loop().run_in_executor(pool, int)  # the worker is up before the clock starts
        tick = asyncio.create_task(ticker(lags, stop))
        started = time.perf_counter()
        reports = await scorer.retrain_pending(pool, reg)
        took = time.perf_counter() - started
        stop.set()
        await tick
    idle: list[float] = []  # the same ticker with nothing running, as many ticks: what this machine's load costs
    quiet = asyncio.Event()
    tick = asyncio.create_task(ticker(idle, quiet))
    await wait_until(lambda: len(idle) >= len(lags), "as many idle ticks", 10 * took + 10)
    quiet.set()
    await tick
    assert len(reports) == 1 and reports[0]["version"] == 4000
    assert took > 0.5 and len(lags) > 20, took  # the loop kept ticking all along
    # a training on the loop would stall it for the whole training (seconds); noise from the neighbours is not that
    assert max(lags) < 0.1 + max(idle), f"event loop lag {max(lags) * 1000:.0f} ms during a retrain " \
                                        f"(idle: {max(idle) * 1000:.0f} ms)"
    assert scorer.due() == [] and [i.version for i in await reg.list("b")] == [4000]


# --- the model as arrays ----------------------------------------------------------------------------------
def test_array_trees_score_exactly_as_scikit_learn(small_model: Model) -> None:
    from core.ml.recipe import TrainConfig
    from core.ml.train import boosted_trees, compile_trees

    data = dataset(signal_data(600, 1.0, seed=15))
    fitted = boosted_trees(data, TrainConfig(iterations=40, max_depth=3))
    trees = compile_trees(fitted)
    X = np.random.default_rng(1).normal(size=(300, N_FEATURES))
    X[::7, 0] = np.nan  # missing values go where scikit-learn sends them
    ours = 1 / (1 + np.exp(-trees.log_odds(X)))
    assert np.allclose(ours, fitted.predict_proba(X)[:, 1], rtol=0, atol=1e-12)


def test_scoring_imports_no_scikit_learn() -> None:
    import subprocess
    import sys

    code = ("import sys, numpy as np; from core.ml.filter import MLScorer; from core.ml.artifact import parse; "
            "from core.ml.report import replay_fields; import bot.replay; "
            "print(sorted(m for m in ('sklearn', 'scipy', 'skops') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_verdict_takes_effect_a_fixed_market_time_after_its_data() -> None:
    """Trained on the outcomes known when candle K is complete, in force at close(K) + effect_delay_ms: the same
    whether the training ran at once or beside the replay (executor), so a replay stays reproducible."""

    rows = signal_data(500, 1.5, seed=16)
    delay = 6 * 3_600_000
    decisions = []
    for executor in (None, ThreadPoolExecutor(1)):
        scorer = MLScorer("b", FilterSettings(effect_delay_ms=delay, min_samples=500), executor=executor)
        for p in rows:
            scorer.observe(p)
        last = rows[-1].opened_at  # seen: the candle that closed it (candles_seen 0 here)
        probe = [Signal(f"q{h}", "b", "BTCUSDT", "15", "trend_pullback", "long", Decimal(100), Decimal(99),
                        Decimal(102), last + timedelta(hours=h), features(np.ones(N_FEATURES)))
                 for h in (1, 5, 6, 7)]
        decisions.append([scorer.score(s).model_version for s in probe])
    assert decisions[0] == decisions[1] == [None, None, 500, 500]


def test_a_training_that_fits_nothing_never_waits_for_the_worker() -> None:
    """Too few out-of-sample outcomes for the gate: the verdict ("not enough evidence yet") is computed at once,
    without scikit-learn, so a replay's first trainings never wait for the worker to start; the first one that
    fits a model goes to it."""

    class Counting(ThreadPoolExecutor):
        def __init__(self) -> None:
            super().__init__(1)
            self.jobs: list[int] = []

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            self.jobs.append(fn.keywords["version"])
            return super().submit(fn, *args, **kwargs)

    rows = signal_data(400, 1.5, seed=17)
    with Counting() as worker:
        scorer = MLScorer("b", FilterSettings(min_samples=30, retrain_every=50), executor=worker)
        for p in rows:
            scorer.observe(p)
        scorer.score(a_signal(0, np.zeros(N_FEATURES)))  # a year later: every verdict in force
    refused = [t.version for t in scorer.pending if not t.report["folds"]]  # nothing fitted
    assert refused == [30, 198]  # the gate needs 100 out-of-sample outcomes: the latest half of 200 rows
    assert worker.jobs and min(worker.jobs) > max(refused)  # only trainings that fit went to the worker
    assert sorted(worker.jobs + refused) == [t.version for t in scorer.pending]


# --- refusals: information, or a decision when "promote anyway" means something ------------------------
async def test_only_a_refusal_that_measured_better_asks_the_operator() -> None:
    in_force = {"version": 3, "brier": 0.24, "lift_r": 0.05}
    better = {"challenger": {"brier": 0.23, "lift_r": 0.09}, "champion": in_force, "why": "not enough evidence"}
    worse_lift = {"challenger": {"brier": 0.23, "lift_r": 0.04}, "champion": in_force, "why": "lift"}
    worse_brier = {"challenger": {"brier": 0.25, "lift_r": 0.09}, "champion": in_force, "why": "Brier"}
    no_filter = {"challenger": {"brier": 0.23, "lift_r": -0.01}, "champion": {"brier": 0.25, "lift_r": 0.0}}
    scorer = MLScorer("b", FilterSettings())
    for version, report in enumerate((better, worse_lift, worse_brier, no_filter), start=1):
        scorer.pending.append(Trained("scalp", version, 0, 100, report, b"-", promoted=False))
    reg = MemoryRegistry(KEY)
    await scorer.flush(reg, notify_refusals=True)
    assert [r["version"] for r in reg.refusals] == [1]  # the others are their model rows only
    assert [i.version for i in await reg.list("b")] == [1, 2, 3, 4]
    assert not worth_asking({"challenger": {"lift_r": 0.2}})  # a figure missing: nothing to weigh
    # no champion: "no filter" is in force, at the base rate's Brier (the gate's report keeps it there)
    first = {"challenger": {"brier": 0.23, "lift_r": 0.05}, "champion": {"version": None}}
    assert worth_asking({**first, "base_rate": {"brier": 0.24}})
    assert not worth_asking({**first, "base_rate": {"brier": 0.22}})
