"""The ML filter, pure parts: dataset and labels, time order and leakage, calibration, EV and the
decision rule, the unscored state, the champion/challenger gate, artifacts and their signatures,
the scorer's state across a restart, and retraining off the event loop."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
import skops.io

from core.ml import artifact, metrics
from core.ml.artifact import ArtifactRefused, dumps, load_verified, loads_trusted, sign, verify
from core.ml.dataset import FEATURE_NAMES, N_FEATURES, Dataset, build, feature_vector, label
from core.ml.filter import FilterSettings, MLScorer, Trained
from core.ml.gate import Candidate, WalkForward, retrain, walk_forward
from core.ml.model import Ensemble, Recipe, train
from core.ml.registry import ChampionLoad, MemoryRegistry, ModelArtifact
from core.ml.verdict import worth_asking
from core.phantom import Phantom
from core.signal import Signal

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
    again = loads_trusted(dumps(a))
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


def constant_model(p: float) -> Ensemble:
    return Ensemble({}, np.array([0.0, 1.0]), np.array([p, p]), 0, p, {"features": list(FEATURE_NAMES)})


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
    scorer = MLScorer("b", FilterSettings(min_samples=30, retrain_every=50))
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
    assert [t.version for t in scorer.pending] == [30]  # the first training, at exactly 30 outcomes
    assert scorer.stats()["trend_pullback"]["outcomes_until_retrain"] == 50


# --- the gate ----------------------------------------------------------------------------------------
def test_gate_promotes_a_model_that_beats_no_model() -> None:
    data = dataset(signal_data(500, 1.5, seed=8))
    result = retrain(data, version=500)
    assert result.promoted, result.report["why"]
    ch, base = result.report["challenger"], result.report["champion"]
    assert ch["brier"] < base["brier"] and ch["lift_r"] > 0 and base["lift_r"] == 0.0
    assert result.report["folds"] and result.report["calibration"] and result.report["ev_buckets"]
    assert result.report["importances"][0][0] == FEATURE_NAMES[0]  # the informative one


def test_gate_refuses_a_shuffled_label_challenger_and_keeps_the_champion() -> None:
    rows = signal_data(500, 1.5, seed=9)
    champion = retrain(dataset(rows[:400]), version=400)
    assert champion.promoted
    scorer = MLScorer("b", FilterSettings(min_samples=30, retrain_every=100,
                                          recipe=Recipe(shuffle_labels=True)))  # a challenger that learns nothing
    state = {"v": 1, "clock_ms": 0, "strategies": {"trend_pullback": {
        "n": 400, "trained_n": 400, "champion": 400, "in_force_ms": 0, "champion_report": champion.report}}}
    scorer.resume(state, rows[:400], {"trend_pullback": ChampionLoad(champion.model, 400)})
    for p in rows[400:]:
        scorer.observe(p)
    assert [t.version for t in scorer.pending] == [500]
    refused = scorer.pending[0]
    assert not refused.promoted and "Brier" in refused.report["why"]
    assert refused.report["challenger"]["brier"] > refused.report["champion"]["brier"]
    assert scorer.stats()["trend_pullback"]["version"] == 400  # the champion stays
    assert scorer.score(a_signal(1, np.ones(N_FEATURES))).model_version == 400


def test_gate_promotes_a_genuinely_better_challenger_over_a_weak_champion() -> None:
    rows = signal_data(600, 1.5, seed=10)
    weak = retrain(dataset(rows[:300]), version=300, recipe=Recipe(shuffle_labels=True))
    better = retrain(dataset(rows), version=600, champion=weak.model, champion_version=300)
    assert better.promoted, better.report["why"]
    assert better.report["challenger"]["brier"] <= better.report["champion"]["brier"]


def test_the_same_recipe_with_more_data_is_judged_on_the_folds_it_differs() -> None:
    rows = signal_data(400, 1.5, seed=11)
    first = retrain(dataset(rows[:350]), version=350)
    second = retrain(dataset(rows), version=400, champion=first.model, champion_version=350)
    folds = second.report["folds"]
    # slices before the champion's cutoff: the champion "as of" then is the challenger's own fold model
    assert folds[0]["challenger"] == folds[0]["champion"]
    assert second.promoted is (second.report["challenger"]["brier"] <= second.report["champion"]["brier"] and
                               second.report["challenger"]["lift_r"] >= second.report["champion"]["lift_r"])


# --- artifacts -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model() -> Ensemble:
    return train(dataset(signal_data(200, 1.0, seed=12)))


def test_signed_artifacts_verify_and_tampered_ones_are_refused(small_model: Ensemble,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = dumps(small_model)
    digest, mac = sign(KEY, "b", "scalp", 3, data)
    verify(KEY, "b", "scalp", 3, data, digest, mac)
    parsed: list[bytes] = []
    real_loads = skops.io.loads
    monkeypatch.setattr(skops.io, "loads", lambda b, **kw: parsed.append(b) or real_loads(b, **kw))
    monkeypatch.setattr(skops.io, "get_untrusted_types", _spy(parsed, skops.io.get_untrusted_types))
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


def _spy(calls: list[bytes], real):  # type: ignore[no-untyped-def]
    def spy(*args, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw.get("data", b""))
        return real(*args, **kw)
    return spy


def test_unexpected_types_in_a_signed_artifact_are_refused() -> None:
    import operator

    blob = skops.io.dumps({"format": 1, "members": {"rf": operator.add}})  # signed, but holds a function
    digest, mac = sign(KEY, "b", "s", 1, blob)
    with pytest.raises(ArtifactRefused, match=r"unexpected types: _operator\.add"):
        load_verified(KEY, "b", "s", 1, blob, digest, mac)
    assert "sklearn.tree._tree.Tree" in artifact.ALLOWED_TYPES


async def test_memory_registry_falls_back_to_the_previous_champion(small_model: Ensemble) -> None:
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
    settings = FilterSettings(min_samples=60, retrain_every=100)
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
    scorer = MLScorer("b", FilterSettings(inline=False, min_samples=30, retrain_every=50))
    for p in signal_data(4000, 1.0, seed=14):
        scorer.observe(p)
    assert scorer.pending == [] and scorer.due() == ["trend_pullback"]  # deferred: nothing trained inline
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            start = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - start - 0.01)

    reg = MemoryRegistry(KEY)
    with ProcessPoolExecutor(max_workers=1) as pool:
        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        reports = await scorer.retrain_pending(pool, reg)
        took = time.perf_counter() - started
        stop.set()
        await tick
    assert len(reports) == 1 and reports[0]["version"] == 4000
    assert took > 0.5 and len(lags) > 20  # the loop kept ticking all along
    # inline, the loop would stall for the whole retrain; a busy machine's scheduling hiccups are far shorter
    assert max(lags) < took / 4, f"event loop lag {max(lags) * 1000:.0f} ms during a {took:.1f} s retrain"
    assert scorer.due() == [] and [i.version for i in await reg.list("b")] == [4000]


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
