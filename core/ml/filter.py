"""MLScorer: the ML filter the engine consults (core/ml/scorer.Scorer).

- score(signal): with a champion for the signal's strategy, calibrated p(win), EV = p*RR - (1-p) and
  the decision "take when EV >= the model's threshold (never below the bot's) and p >= floor"; without
  one (too few outcomes, or no challenger has shown evidence yet: core/ml/gate.py) the signal is taken
  and flagged unscored.
- observe(phantom): every closed phantom (gap exits aside) joins its strategy's learning data.
- Training, once `min_samples` outcomes are in and then whenever the data grew by `retrain_every`
  outcomes and by `retrain_growth` of itself:
  * inline (replay, tests): a training is launched when the candle that made it due is complete, on
    the outcomes known then (those closed by that candle K and before), and its verdict takes effect at
    market time close(K) + `effect_delay_ms`, before any signal of that time is scored. Nothing else
    depends on when it ran, so it may run beside the replay in `executor` (a worker process on the
    second core: core/ml/worker.py) and a replay stays reproducible, resumed or not: a training in flight
    at a checkpoint is in its state and runs again after a restart. One training per strategy at a time.
  * deferred (live): observe() only marks the strategy due; the host awaits retrain_pending(), which
    trains in a process pool (the event loop keeps answering and trading) and applies the result.
- Trained models wait in `pending` until flush() writes them to the registry (the replay does it just
  before each checkpoint: core/ml/store.py). state()/resume() carry the scorer across restarts.

No wall clock: times are data times (signal times and the candles that closed outcomes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from core.config import BotConfig
from core.market.candle import INTERVAL_MS
from core.ml.dataset import FEATURE_NAMES, Dataset, Key, Outcome, feature_vector, outcome_of
from core.ml.evidence import EvidenceRule
from core.ml.gate import RetrainResult, WalkForward, fits_anything, retrain
from core.ml.metrics import expected_value
from core.ml.model import Model
from core.ml.recipe import Recipe
from core.ml.registry import ChampionLoad, ModelArtifact, ModelRegistry
from core.ml.scorer import Score
from core.ml.verdict import worth_asking
from core.phantom import Phantom
from core.signal import Signal

log = logging.getLogger(__name__)

STATE_VERSION = 2
DAY_MS = 86_400_000


@dataclass(frozen=True)
class FilterSettings:
    threshold: float = 0.0  # minimum EV in R (BotConfig.ml_threshold): the floor of every model's threshold
    min_p: float = 0.0  # p(win) floor (BotConfig.ml_min_p)
    min_samples: int = 30  # outcomes before the first training (nothing is fitted before the walk-forward holds
    # the gate's 100 out-of-sample outcomes: until then a training is an instant "not enough evidence yet")
    retrain_every: int = 50  # new outcomes between trainings, at least ...
    retrain_growth: float = 0.2  # ... and at least this share of the outcomes already learnt from
    # inline: market time from a training's data to its verdict in force. A week: long enough that the training
    # beside a replay (~0.1 s each) never holds the candles up (the shared 4-pair set replays a day of market time
    # in ~30 ms; at 1 day the replay waited 1.3 s for its 20 fits, at 3 days 0.5 s); a replay's model is thus a
    # little staler than a live one's, which is in force as soon as it is trained
    effect_delay_ms: int = 7 * DAY_MS
    inline: bool = True  # replay: trainings launched by observe()/score(); live: retrain_pending()
    recipe: Recipe = field(default_factory=Recipe)
    walk: WalkForward = field(default_factory=WalkForward)
    rule: EvidenceRule = field(default_factory=EvidenceRule)

    @classmethod
    def for_bot(cls, config: BotConfig, **overrides: Any) -> FilterSettings:
        return cls(threshold=config.ml_threshold, min_p=config.ml_min_p, **overrides)

    def due_at(self, trained_n: int | None) -> int:
        """The outcome count at which the next training is due."""
        if trained_n is None:
            return self.min_samples
        return trained_n + max(self.retrain_every, round(self.retrain_growth * trained_n))


@dataclass
class _Since:
    """Outcomes of the signals scored by the champion in force, since it was promoted."""

    accepted: int = 0
    accepted_wins: int = 0
    accepted_r: float = 0.0
    rejected: int = 0
    rejected_wins: int = 0
    rejected_r: float = 0.0

    def add(self, o: Outcome) -> None:
        if o.action == "REJECTED":
            self.rejected += 1
            self.rejected_wins += o.y
            self.rejected_r += o.r
        else:
            self.accepted += 1
            self.accepted_wins += o.y
            self.accepted_r += o.r

    def as_dict(self) -> dict[str, Any]:
        def rate(wins: int, n: int) -> float | None:
            return round(wins / n, 4) if n else None

        def avg(r: float, n: int) -> float | None:
            return round(r / n, 4) if n else None

        return {"accepted": self.accepted, "accepted_win_rate": rate(self.accepted_wins, self.accepted),
                "accepted_avg_r": avg(self.accepted_r, self.accepted), "rejected": self.rejected,
                "rejected_win_rate": rate(self.rejected_wins, self.rejected),
                "rejected_avg_r": avg(self.rejected_r, self.rejected)}


@dataclass
class Tally:
    """The filter's own decisions, and the outcomes of the signals it scored (the replay's ml_lift_r): a
    signal rejected later for another reason (an entry the venue refused) still counts as taken here."""

    scored: int = 0
    rejected: int = 0
    open: dict[str, bool] = field(default_factory=dict)  # scored signal id -> taken, until its phantom closes
    outcomes: int = 0
    r_sum: float = 0.0
    taken: int = 0
    taken_r_sum: float = 0.0

    def decided(self, signal_id: str, take: bool) -> None:
        self.scored += 1
        self.rejected += not take
        self.open[signal_id] = take

    def closed(self, signal_id: str, r: float | None) -> None:
        take = self.open.pop(signal_id, None)
        if take is None or r is None:  # unscored, or closed by a data gap (no outcome)
            return
        self.outcomes += 1
        self.r_sum += r
        if take:
            self.taken += 1
            self.taken_r_sum += r

    @property
    def lift_r(self) -> float:
        """Expectancy (R) of the scored signals taken minus that of all scored signals (0 with none scored;
        nothing taken counts as expectancy 0, as core/ml/metrics.ev_lift does)."""
        if not self.outcomes:
            return 0.0
        return (self.taken_r_sum / self.taken if self.taken else 0.0) - self.r_sum / self.outcomes

    def as_json(self) -> dict[str, Any]:
        return {"scored": self.scored, "rejected": self.rejected, "open": self.open, "outcomes": self.outcomes,
                "r_sum": self.r_sum, "taken": self.taken, "taken_r_sum": self.taken_r_sum}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Tally:
        return cls(**{**doc, "open": dict(doc["open"])})


@dataclass
class _Job:
    """A training in flight (inline mode): what it learns from, and when its verdict takes effect."""

    n: int  # outcomes it learns from: its version
    seen: Key  # the last candle whose outcomes it holds
    effect_ms: int
    result: Future[RetrainResult]

    def as_json(self) -> dict[str, Any]:
        return {"n": self.n, "seen": list(self.seen), "effect_ms": self.effect_ms}


@dataclass
class _Strategy:
    outcomes: list[Outcome] = field(default_factory=list)
    trained_n: int | None = None  # outcome count at the last training (None: never trained)
    champion: Model | None = None
    champion_version: int | None = None
    in_force_ms: int | None = None  # data time the champion started scoring
    champion_report: dict[str, Any] | None = None  # the gate report that promoted it
    last_report: dict[str, Any] | None = None  # the latest gate report (promoted or not)
    trainings: int = 0
    promotions: int = 0
    since: _Since = field(default_factory=_Since)
    job: _Job | None = None
    requested: bool = False
    busy: bool = False

    def dataset(self, name: str, seen: Key | None = None) -> Dataset:
        rows = self.outcomes if seen is None else [o for o in self.outcomes if o.seen <= seen]
        return Dataset.from_outcomes(name, rows)


@dataclass(frozen=True)
class Verdict:
    """The gate's latest word on a strategy's challenger."""

    strategy: str
    version: int
    promoted: bool
    why: str


@dataclass(frozen=True)
class Trained:
    """A trained model (or a refusal's figures) waiting to be written to the registry."""

    strategy: str
    version: int
    trained_at_ms: int
    n_samples: int
    report: dict[str, Any]
    artifact: bytes | None  # None: no model was kept (a refusal); the registry row holds the figures
    promoted: bool


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _done(result: RetrainResult) -> Future[RetrainResult]:
    future: Future[RetrainResult] = Future()
    future.set_result(result)
    return future


class MLScorer:
    def __init__(self, bot_id: str, settings: FilterSettings | None = None, executor: Executor | None = None) -> None:
        """`executor`: where inline trainings run (None: at once, in this thread; results are the same)."""
        self.bot_id = bot_id
        self.settings = settings or FilterSettings()
        self.executor = executor
        self.strategies: dict[str, _Strategy] = {}
        self.pending: list[Trained] = []
        self._flushing = asyncio.Lock()
        self.key: Key | None = None  # the latest candle seen (signals and outcomes)
        self.tally = Tally()

    @property
    def clock_ms(self) -> int:
        return self.key[0] if self.key else 0

    def _get(self, name: str) -> _Strategy:
        st = self.strategies.get(name)
        if st is None:
            st = self.strategies[name] = _Strategy()
        return st

    # --- the Scorer protocol ------------------------------------------------------------------------
    def score(self, signal: Signal) -> Score:
        score = self._score(signal)
        if score.p_win is not None:
            self.tally.decided(signal.id, score.take)
        return score

    def _score(self, signal: Signal) -> Score:
        close_ms = int(signal.time.timestamp() * 1000)
        self._advance((close_ms, INTERVAL_MS[signal.interval], signal.symbol))
        st = self.strategies.get(signal.strategy)
        if st is None or st.champion is None:
            return Score(True, None, None, None, self._unscored_reason(st))
        p = st.champion.predict_one(feature_vector(signal.features))
        rr = float(signal.features.get("reward_risk", signal.reward_risk))
        ev = float(expected_value(p, rr))
        s = self.settings
        threshold = max(s.threshold, st.champion.threshold)
        if p < s.min_p:
            return Score(False, p, ev, st.champion_version, f"p {p:.2f} < floor {s.min_p:.2f}")
        if ev < threshold:
            return Score(False, p, ev, st.champion_version, f"ev {ev:+.2f} < {threshold:+.2f}")
        return Score(True, p, ev, st.champion_version, f"ev {ev:+.2f} >= {threshold:+.2f}")

    def _unscored_reason(self, st: _Strategy | None) -> str:
        n = len(st.outcomes) if st else 0
        if st is None or n < self.settings.min_samples:
            return f"unscored: no model yet ({n}/{self.settings.min_samples} outcomes)"
        if st.trained_n is None:
            return f"unscored: first model in training ({n} outcomes)"
        return "unscored: not enough evidence yet"

    def observe(self, phantom: Phantom) -> None:
        o = outcome_of(phantom)
        self.tally.closed(phantom.id, None if o is None else o.r)
        if o is None:
            return
        self._advance(o.seen)
        st = self._get(o.strategy)
        st.outcomes.append(o)
        if st.champion is not None and o.ml_score is not None and st.in_force_ms is not None \
                and o.opened_ms >= st.in_force_ms:
            st.since.add(o)

    # --- inline training: launched on complete candles, in force after a fixed market-time delay ---
    def _advance(self, key: Key) -> None:
        if self.key is None or key > self.key:
            if self.key is not None and self.settings.inline:
                for name, st in sorted(self.strategies.items()):  # the candle self.key is complete
                    if st.job is None and self._is_due(st):
                        self._launch(name, st, self.key)
            self.key = key
        ready = sorted((st.job.effect_ms, name) for name, st in self.strategies.items()
                       if st.job is not None and st.job.effect_ms <= key[0])
        for effect_ms, name in ready:
            st = self.strategies[name]
            assert st.job is not None
            result, st.job = st.job.result, None
            self._apply(name, st, result.result(), effect_ms)

    def _launch(self, name: str, st: _Strategy, seen: Key, effect_ms: int | None = None) -> None:
        data = st.dataset(name, seen)
        job = self._job(data, st)
        s = self.settings
        # a training that fits nothing runs here: the worker may still be starting (importing scikit-learn)
        if self.executor is not None and fits_anything(data, s.walk, s.rule):
            result = self.executor.submit(job)
        else:
            result = _done(job())
        st.job = _Job(len(data), seen, seen[0] + self.settings.effect_delay_ms if effect_ms is None else effect_ms,
                      result)

    # --- retraining -------------------------------------------------------------------------------
    def _is_due(self, st: _Strategy) -> bool:
        n = len(st.outcomes)
        if n < self.settings.min_samples or st.busy:
            return False
        if st.requested:
            return st.trained_n != n
        return n >= self.settings.due_at(st.trained_n)

    def due(self) -> list[str]:
        """Strategies whose retraining is due (new outcomes, or a /retrain request)."""
        return [name for name, st in sorted(self.strategies.items()) if self._is_due(st)]

    def outcomes_until_retrain(self, name: str) -> int:
        st = self.strategies.get(name)
        n = len(st.outcomes) if st else 0
        return max(0, self.settings.due_at(st.trained_n if st else None) - n)

    def training(self) -> list[str]:
        """Strategies whose training runs now (a /retrain waits behind them)."""
        return [name for name, st in sorted(self.strategies.items()) if st.busy]

    def verdict(self, name: str) -> Verdict | None:
        st = self.strategies.get(name)
        if st is None or st.last_report is None:
            return None
        report = st.last_report
        return Verdict(name, int(report["version"]), bool(report["promoted"]), str(report["why"]))

    def request_retrain(self, strategy: str | None = None) -> list[str]:
        """/retrain: mark strategies to retrain at the next retrain_pending(); returns those that can."""
        names = [strategy] if strategy else sorted(self.strategies)
        out = []
        for name in names:
            st = self.strategies.get(name)
            if st is not None and len(st.outcomes) >= self.settings.min_samples and st.trained_n != len(st.outcomes):
                st.requested = True
                out.append(name)
        return out

    def _job(self, data: Dataset, st: _Strategy) -> partial[RetrainResult]:
        s = self.settings
        # a desk that can ask its operator (live) keeps refused challengers for "promote anyway"
        return partial(retrain, data, version=len(data), recipe=s.recipe, champion=st.champion,
                       champion_version=st.champion_version, walk=s.walk, threshold=s.threshold, min_p=s.min_p,
                       rule=s.rule, keep_refused=not s.inline)

    async def retrain_pending(self, executor: Executor, registry: ModelRegistry | None = None, *,
                              force: bool = False, notify_refusals: bool = True) -> list[dict[str, Any]]:
        """Retrain every due strategy (every strategy with new outcomes when `force`: the schedule) in
        `executor` (a ProcessPoolExecutor: training never runs on the event loop), apply the gate's
        decisions, and write the models to `registry`. Returns the gate reports."""
        loop = asyncio.get_running_loop()
        names = [n for n, st in sorted(self.strategies.items())
                 if len(st.outcomes) >= self.settings.min_samples and st.trained_n != len(st.outcomes)] \
            if force else self.due()
        reports = []
        for name in names:
            st = self.strategies[name]
            if st.busy:
                continue
            job = self._job(st.dataset(name), st)
            st.busy = True
            try:
                result = await loop.run_in_executor(executor, job)
            finally:
                st.busy = False
                st.requested = False
            self._apply(name, st, result, self.clock_ms)
            reports.append(result.report)
        if registry is not None:
            await self.flush(registry, notify_refusals=notify_refusals)
        return reports

    def _apply(self, name: str, st: _Strategy, result: RetrainResult, in_force_ms: int) -> None:
        st.trained_n = result.version
        st.trainings += 1
        st.requested = False
        st.last_report = result.report
        self.pending.append(Trained(name, result.version, result.report["cutoff_ms"], result.report["n_samples"],
                                    result.report, result.artifact, result.promoted))
        if result.promoted:
            assert result.model is not None
            self._adopt(st, result.model, result.version, result.report, in_force_ms)
        log.info("%s v%d %s: %s", name, result.version, "promoted" if result.promoted else "refused",
                 result.report["why"])

    def adopt(self, strategy: str, model: Model, version: int, report: dict[str, Any] | None = None) -> MLScorer:
        """Put a model in force now (an operator's "promote anyway" after reload, tools, tests)."""
        if not compatible(model):
            raise ValueError(f"model v{version} was trained on another feature list")
        self._adopt(self._get(strategy), model, version, report, self.clock_ms)
        return self

    def _adopt(self, st: _Strategy, model: Model, version: int, report: dict[str, Any] | None,
               in_force_ms: int) -> None:
        st.champion, st.champion_version, st.champion_report = model, version, report
        st.in_force_ms = in_force_ms
        st.promotions += 1
        st.since = _Since()

    # --- persistence -------------------------------------------------------------------------------
    async def flush(self, registry: ModelRegistry, *, notify_refusals: bool) -> int:
        """Write the trained models (and promotions, refusals) to the registry. Idempotent: an event
        leaves the queue only once fully written, and every write can be repeated."""
        async with self._flushing:  # one writer: two (a save, a retrain) would pop each other's events unwritten
            return await self._flush(registry, notify_refusals=notify_refusals)

    async def _flush(self, registry: ModelRegistry, *, notify_refusals: bool) -> int:
        done = 0
        while self.pending:
            t = self.pending[0]
            await registry.save(ModelArtifact(self.bot_id, t.strategy, t.version,
                                              datetime.fromtimestamp(t.trained_at_ms / 1000, UTC), t.n_samples,
                                              t.report, t.artifact or b""))
            if t.promoted:
                await registry.set_champion(self.bot_id, t.strategy, t.version, actor="system", reason=t.report["why"])
            elif notify_refusals and t.artifact is not None and worth_asking(t.report):
                # only a kept model that measured better is worth asking about; other refusals are information
                await registry.record_refusal(self.bot_id, t.strategy, t.version, t.report)
            self.pending.pop(0)
            done += 1
        return done

    def state(self) -> dict[str, Any]:
        """What a checkpoint must hold to rebuild the scorer (with the outcomes and the registry)."""
        return {"v": STATE_VERSION, "key": list(self.key) if self.key else None, "tally": self.tally.as_json(),
                "strategies": {
            name: {"n": len(st.outcomes), "trained_n": st.trained_n, "champion": st.champion_version,
                   "in_force_ms": st.in_force_ms, "trainings": st.trainings, "promotions": st.promotions,
                   "champion_report": st.champion_report, "last_report": st.last_report,
                   "job": st.job.as_json() if st.job else None}
            for name, st in sorted(self.strategies.items())}}

    @staticmethod
    def champions_in(state: dict[str, Any]) -> dict[str, int]:
        if state.get("v") != STATE_VERSION:
            return {}
        return {name: doc["champion"] for name, doc in state.get("strategies", {}).items()
                if doc.get("champion") is not None}

    def reset(self) -> None:
        self.strategies.clear()
        self.pending.clear()
        self.key = None
        self.tally = Tally()

    def resume(self, state: dict[str, Any] | None, phantoms: Iterable[Phantom],
               champions: dict[str, ChampionLoad]) -> None:
        """Rebuild from a checkpoint's state, the closed phantoms saved with it, and the champions it
        names (loaded and verified by the registry); trainings in flight then run again. No state: learn
        from the phantoms, no model yet."""
        self.reset()
        if state is not None and state.get("v") != STATE_VERSION:
            log.warning("ML state of an unknown version %r: starting the filter afresh", state.get("v"))
            state = None
        state = state or {}
        for p in phantoms:
            o = outcome_of(p)
            if o is not None:
                self._get(o.strategy).outcomes.append(o)
        for st in self.strategies.values():
            st.outcomes.sort(key=lambda o: (o.seen, o.key))
        key = state.get("key")
        self.key = (int(key[0]), int(key[1]), str(key[2])) if key else None
        if "tally" in state:
            self.tally = Tally.from_json(state["tally"])
        for name, doc in state.get("strategies", {}).items():
            st = self._get(name)
            if len(st.outcomes) != doc["n"]:
                log.warning("%s: the checkpoint counted %d outcomes, the database holds %d", name, doc["n"],
                            len(st.outcomes))
            st.trained_n, st.in_force_ms = doc.get("trained_n"), doc.get("in_force_ms")
            st.trainings, st.promotions = int(doc.get("trainings", 0)), int(doc.get("promotions", 0))
            st.champion_report, st.last_report = doc.get("champion_report"), doc.get("last_report")
            want = doc.get("champion")
            load = champions.get(name)
            if want is not None:
                if load is None or load.model is None or not compatible(load.model):
                    log.error("%s: champion v%s could not be loaded (%s): no model in force", name, want,
                              "; ".join(load.refused) if load else "not found")
                    st.champion_report = None
                else:
                    if load.version != want:
                        log.error("%s: champion v%s refused, v%s (the previous champion) is used", name, want,
                                  load.version)
                    st.champion, st.champion_version = load.model, load.version
                    for o in st.outcomes:
                        if o.ml_score is not None and st.in_force_ms is not None and o.opened_ms >= st.in_force_ms:
                            st.since.add(o)
            if (job := doc.get("job")) is not None:
                seen = (int(job["seen"][0]), int(job["seen"][1]), str(job["seen"][2]))
                self._launch(name, st, seen, int(job["effect_ms"]))
                assert st.job is not None
                if st.job.n != job["n"]:
                    log.warning("%s: the training in flight learnt from %d outcomes, now %d", name, job["n"],
                                st.job.n)

    async def reload_champion(self, registry: ModelRegistry, strategy: str) -> int | None:
        """Adopt the registry's champion (after an operator's "promote anyway"); returns its version."""
        load = await registry.load_champion(self.bot_id, strategy)
        st = self._get(strategy)
        if load.model is None or not compatible(load.model):
            return st.champion_version
        if load.version != st.champion_version:
            infos = [i for i in await registry.list(self.bot_id, strategy) if i.version == load.version]
            self._adopt(st, load.model, int(load.version or 0), infos[0].metrics if infos else None, self.clock_ms)
        return st.champion_version

    # --- reporting -----------------------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        """/ml_stats: per strategy, the model in force, how it validated, how it did since promotion."""
        out = {}
        for name, st in sorted(self.strategies.items()):
            report = st.champion_report or {}
            challenger = report.get("challenger", {})
            last = st.last_report
            if st.champion is not None:
                status = f"champion v{st.champion_version}"
            elif st.trained_n is None:
                status = f"unscored: {len(st.outcomes)}/{self.settings.min_samples} outcomes before the first model"
            else:
                status = "unscored: not enough evidence yet"
            out[name] = {
                "status": status, "version": st.champion_version,
                "trained_at": _iso(st.champion.cutoff_ms) if st.champion else None,
                "samples": st.champion.meta.get("n_samples") if st.champion else None,
                "auc": challenger.get("auc"), "brier": challenger.get("brier"),
                "base_brier": (report.get("base_rate") or {}).get("brier"),
                "lift_r": challenger.get("lift_r"), "evidence": report.get("evidence"),
                "threshold": max(self.settings.threshold, st.champion.threshold) if st.champion else None,
                "min_p": self.settings.min_p,
                "since_promotion": st.since.as_dict() if st.champion else None,
                "importances": report.get("importances", []),
                "outcomes": len(st.outcomes), "outcomes_until_retrain": self.outcomes_until_retrain(name),
                "last_challenger": None if last is None else {
                    "version": last.get("version"), "promoted": last.get("promoted"), "why": last.get("why"),
                    "evidence": last.get("evidence")},
                "calibration": report.get("calibration", []), "ev_buckets": report.get("ev_buckets", []),
            }
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """For the replay summary: deterministic facts only (the last verdict with its evidence)."""
        return {name: {"outcomes": len(st.outcomes), "trainings": st.trainings, "promotions": st.promotions,
                       "champion": st.champion_version,
                       "last": None if st.last_report is None else {
                           "version": st.last_report["version"], "promoted": st.last_report["promoted"],
                           "why": st.last_report["why"], "evidence": st.last_report.get("evidence")}}
                for name, st in sorted(self.strategies.items())}


def compatible(model: Model) -> bool:
    """A model trained on another feature list cannot score today's signals."""
    if list(model.meta.get("features", [])) != list(FEATURE_NAMES):
        log.error("model v%s was trained on another feature list: not used", model.version)
        return False
    return True
