"""MLScorer: the ML filter the engine consults (core/ml/scorer.Scorer).

- score(signal): with a champion for the signal's strategy, calibrated p(win), EV = p*RR - (1-p) and
  the decision "take when EV >= threshold and p >= floor"; without one (fewer than `min_samples`
  outcomes, or no challenger has passed the gate yet) the signal is taken and flagged unscored.
- observe(phantom): every closed phantom (gap exits aside) joins its strategy's learning data.
- Retraining after every `retrain_every` new outcomes of a strategy (the first at `min_samples`):
  * inline (replay): inside observe(), at that exact outcome, so a replay is reproducible: the data
    are the outcomes observed so far, ordered by (exit time, id); the version is their count;
  * deferred (live): observe() only marks the strategy due; the host awaits retrain_pending(), which
    trains in a process pool (the event loop keeps answering and trading) and applies the result.
  Either way a challenger replaces the champion only if the gate says so (core/ml/gate.py).
- Trained models wait in `pending` until flush() writes them to the registry (the replay does it just
  before each checkpoint: core/ml/store.py). state()/resume() carry the scorer across restarts.

No wall clock: times are data times (signal and exit times).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from core.config import BotConfig
from core.ml.dataset import FEATURE_NAMES, Dataset, Outcome, feature_vector, outcome_of
from core.ml.gate import RetrainResult, WalkForward, retrain
from core.ml.metrics import expected_value
from core.ml.model import Ensemble, Recipe
from core.ml.registry import ChampionLoad, ModelArtifact, ModelRegistry
from core.ml.scorer import Score
from core.ml.verdict import worth_asking
from core.phantom import Phantom
from core.signal import Signal

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass(frozen=True)
class FilterSettings:
    threshold: float = 0.0  # minimum EV in R (BotConfig.ml_threshold)
    min_p: float = 0.0  # p(win) floor (BotConfig.ml_min_p)
    min_samples: int = 30  # outcomes of a strategy before its first model
    retrain_every: int = 50  # new outcomes between retrains
    inline: bool = True  # replay: train inside observe(); live: retrain_pending()
    recipe: Recipe = field(default_factory=Recipe)
    walk: WalkForward = field(default_factory=WalkForward)

    @classmethod
    def for_bot(cls, config: BotConfig, **overrides: Any) -> FilterSettings:
        return cls(threshold=config.ml_threshold, min_p=config.ml_min_p, **overrides)


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
class _Strategy:
    outcomes: list[Outcome] = field(default_factory=list)
    trained_n: int | None = None  # outcome count at the last training (None: never trained)
    champion: Ensemble | None = None
    champion_version: int | None = None
    in_force_ms: int | None = None  # data time the champion started scoring
    champion_report: dict[str, Any] | None = None  # the gate report that promoted it
    last_report: dict[str, Any] | None = None  # the latest gate report (promoted or not)
    trainings: int = 0
    promotions: int = 0
    since: _Since = field(default_factory=_Since)
    requested: bool = False
    busy: bool = False

    def dataset(self, name: str) -> Dataset:
        return Dataset.from_outcomes(name, self.outcomes)


@dataclass(frozen=True)
class Verdict:
    """The gate's latest word on a strategy's challenger."""

    strategy: str
    version: int
    promoted: bool
    why: str


@dataclass(frozen=True)
class Trained:
    """A trained model waiting to be written to the registry."""

    strategy: str
    version: int
    trained_at_ms: int
    n_samples: int
    report: dict[str, Any]
    artifact: bytes
    promoted: bool


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


class MLScorer:
    def __init__(self, bot_id: str, settings: FilterSettings | None = None) -> None:
        self.bot_id = bot_id
        self.settings = settings or FilterSettings()
        self.strategies: dict[str, _Strategy] = {}
        self.pending: list[Trained] = []
        self._flushing = asyncio.Lock()
        self.clock_ms = 0  # the latest data time seen (signals and exits)

    def _get(self, name: str) -> _Strategy:
        st = self.strategies.get(name)
        if st is None:
            st = self.strategies[name] = _Strategy()
        return st

    # --- the Scorer protocol ------------------------------------------------------------------------
    def score(self, signal: Signal) -> Score:
        self.clock_ms = max(self.clock_ms, int(signal.time.timestamp() * 1000))
        st = self.strategies.get(signal.strategy)
        if st is None or st.champion is None:
            return Score(True, None, None, None, self._unscored_reason(st))
        p = st.champion.predict_one(feature_vector(signal.features))
        rr = float(signal.features.get("reward_risk", signal.reward_risk))
        ev = float(expected_value(p, rr))
        s = self.settings
        if p < s.min_p:
            return Score(False, p, ev, st.champion_version, f"p {p:.2f} < floor {s.min_p:.2f}")
        if ev < s.threshold:
            return Score(False, p, ev, st.champion_version, f"ev {ev:+.2f} < {s.threshold:+.2f}")
        return Score(True, p, ev, st.champion_version, f"ev {ev:+.2f} >= {s.threshold:+.2f}")

    def _unscored_reason(self, st: _Strategy | None) -> str:
        n = len(st.outcomes) if st else 0
        if st is None or n < self.settings.min_samples:
            return f"unscored: no model yet ({n}/{self.settings.min_samples} outcomes)"
        if st.trained_n is None:
            return f"unscored: first model in training ({n} outcomes)"
        return f"unscored: no model has passed the gate (last challenger v{st.trained_n})"

    def observe(self, phantom: Phantom) -> None:
        o = outcome_of(phantom)
        if o is None:
            return
        self.clock_ms = max(self.clock_ms, o.exit_ms)
        st = self._get(o.strategy)
        st.outcomes.append(o)
        if st.champion is not None and o.ml_score is not None and st.in_force_ms is not None \
                and o.opened_ms >= st.in_force_ms:
            st.since.add(o)
        if self.settings.inline and self._is_due(st):
            self._apply(o.strategy, st, self._retrain(o.strategy, st))

    # --- retraining -------------------------------------------------------------------------------
    def _is_due(self, st: _Strategy) -> bool:
        n = len(st.outcomes)
        if n < self.settings.min_samples or st.busy:
            return False
        if st.requested:
            return st.trained_n != n
        return st.trained_n is None or n - st.trained_n >= self.settings.retrain_every

    def due(self) -> list[str]:
        """Strategies whose retraining is due (new outcomes, or a /retrain request)."""
        return [name for name, st in sorted(self.strategies.items()) if self._is_due(st)]

    def outcomes_until_retrain(self, name: str) -> int:
        st = self.strategies.get(name)
        n = len(st.outcomes) if st else 0
        if st is None or st.trained_n is None:
            return max(0, self.settings.min_samples - n)
        return max(0, st.trained_n + self.settings.retrain_every - n)

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

    def _job(self, name: str, st: _Strategy) -> partial[RetrainResult]:
        s = self.settings
        return partial(retrain, st.dataset(name), version=len(st.outcomes), recipe=s.recipe, champion=st.champion,
                       champion_version=st.champion_version, walk=s.walk, threshold=s.threshold, min_p=s.min_p)

    def _retrain(self, name: str, st: _Strategy) -> RetrainResult:
        return self._job(name, st)()

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
            job = self._job(name, st)
            st.busy = True
            try:
                result = await loop.run_in_executor(executor, job)
            finally:
                st.busy = False
                st.requested = False
            self._apply(name, st, result)
            reports.append(result.report)
        if registry is not None:
            await self.flush(registry, notify_refusals=notify_refusals)
        return reports

    def _apply(self, name: str, st: _Strategy, result: RetrainResult) -> None:
        st.trained_n = result.version
        st.trainings += 1
        st.requested = False
        st.last_report = result.report
        self.pending.append(Trained(name, result.version, result.model.cutoff_ms, result.report["n_samples"],
                                    result.report, result.artifact, result.promoted))
        if result.promoted:
            self._adopt(st, result.model, result.version, result.report)
        log.info("%s v%d %s: %s", name, result.version, "promoted" if result.promoted else "refused",
                 result.report["why"])

    def adopt(self, strategy: str, model: Ensemble, version: int, report: dict[str, Any] | None = None) -> MLScorer:
        """Put a model in force now (an operator's "promote anyway" after reload, tools, tests)."""
        if not compatible(model):
            raise ValueError(f"model v{version} was trained on another feature list")
        self._adopt(self._get(strategy), model, version, report)
        return self

    def _adopt(self, st: _Strategy, model: Ensemble, version: int, report: dict[str, Any] | None) -> None:
        st.champion, st.champion_version, st.champion_report = model, version, report
        st.in_force_ms = self.clock_ms
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
                                              t.report, t.artifact))
            if t.promoted:
                await registry.set_champion(self.bot_id, t.strategy, t.version, actor="system", reason=t.report["why"])
            elif notify_refusals and worth_asking(t.report):  # else the refusal is information (/ml_stats)
                await registry.record_refusal(self.bot_id, t.strategy, t.version, t.report)
            self.pending.pop(0)
            done += 1
        return done

    def state(self) -> dict[str, Any]:
        """What a checkpoint must hold to rebuild the scorer (with the outcomes and the registry)."""
        return {"v": STATE_VERSION, "clock_ms": self.clock_ms, "strategies": {
            name: {"n": len(st.outcomes), "trained_n": st.trained_n, "champion": st.champion_version,
                   "in_force_ms": st.in_force_ms, "trainings": st.trainings, "promotions": st.promotions,
                   "champion_report": st.champion_report, "last_report": st.last_report}
            for name, st in sorted(self.strategies.items())}}

    @staticmethod
    def champions_in(state: dict[str, Any]) -> dict[str, int]:
        return {name: doc["champion"] for name, doc in state.get("strategies", {}).items()
                if doc.get("champion") is not None}

    def reset(self) -> None:
        self.strategies.clear()
        self.pending.clear()
        self.clock_ms = 0

    def resume(self, state: dict[str, Any] | None, phantoms: Iterable[Phantom],
               champions: dict[str, ChampionLoad]) -> None:
        """Rebuild from a checkpoint's state, the closed phantoms saved with it, and the champions it
        names (loaded and verified by the registry). No state: learn from the phantoms, no model yet."""
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
            st.outcomes.sort(key=lambda o: o.key)
        self.clock_ms = int(state.get("clock_ms", 0))
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
            if want is None:
                continue
            if load is None or load.model is None or not compatible(load.model):
                log.error("%s: champion v%s could not be loaded (%s): no model in force", name, want,
                          "; ".join(load.refused) if load else "not found")
                st.champion_report = None
                continue
            if load.version != want:
                log.error("%s: champion v%s refused, v%s (the previous champion) is used", name, want, load.version)
            st.champion, st.champion_version = load.model, load.version
            for o in st.outcomes:
                if o.ml_score is not None and st.in_force_ms is not None and o.opened_ms >= st.in_force_ms:
                    st.since.add(o)

    async def reload_champion(self, registry: ModelRegistry, strategy: str) -> int | None:
        """Adopt the registry's champion (after an operator's "promote anyway"); returns its version."""
        load = await registry.load_champion(self.bot_id, strategy)
        st = self._get(strategy)
        if load.model is None or not compatible(load.model):
            return st.champion_version
        if load.version != st.champion_version:
            infos = [i for i in await registry.list(self.bot_id, strategy) if i.version == load.version]
            self._adopt(st, load.model, int(load.version or 0), infos[0].metrics if infos else None)
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
                status = "unscored: no challenger has passed the gate yet"
            out[name] = {
                "status": status, "version": st.champion_version,
                "trained_at": _iso(st.champion.cutoff_ms) if st.champion else None,
                "samples": st.champion.meta.get("n_samples") if st.champion else None,
                "auc": challenger.get("auc"), "brier": challenger.get("brier"),
                "base_brier": (report.get("base_rate") or {}).get("brier"),
                "lift_r": challenger.get("lift_r"), "threshold": self.settings.threshold,
                "min_p": self.settings.min_p,
                "since_promotion": st.since.as_dict() if st.champion else None,
                "importances": report.get("importances", []),
                "outcomes": len(st.outcomes), "outcomes_until_retrain": self.outcomes_until_retrain(name),
                "last_challenger": None if last is None else {
                    "version": last.get("version"), "promoted": last.get("promoted"), "why": last.get("why")},
                "calibration": report.get("calibration", []), "ev_buckets": report.get("ev_buckets", []),
            }
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """For the replay summary: deterministic facts only."""
        return {name: {"outcomes": len(st.outcomes), "trainings": st.trainings, "promotions": st.promotions,
                       "champion": st.champion_version}
                for name, st in sorted(self.strategies.items())}


def compatible(model: Ensemble) -> bool:
    """A model trained on another feature list cannot score today's signals."""
    if list(model.meta.get("features", [])) != list(FEATURE_NAMES):
        log.error("model v%s was trained on another feature list: not used", model.version)
        return False
    return True
