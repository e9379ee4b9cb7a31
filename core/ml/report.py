"""What the ML filter reports: the replay's figures (measured on the replay itself, with the model in
force at each signal) and the walk-forward report (`python -m bot ml report`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.ml.dataset import Dataset
from core.ml.evidence import Evidence, assess
from core.ml.filter import FilterSettings, MLScorer
from core.ml.gate import Candidate, Evaluation, walk_forward
from core.ml.recipe import Recipe


def replay_fields(scorer: MLScorer | None) -> dict[str, Any]:
    """scored_signals / accepted / ml_rejected (the filter's own decisions) and ml_lift_r: the expectancy (R)
    of the scored signals the filter took minus that of every scored signal, over their outcomes (gap exits
    aside); 0 when no model was in force. Out of sample by construction: each signal was scored by the model
    in force when it was emitted."""
    if scorer is None:
        return {"scored_signals": 0, "accepted": 0, "ml_rejected": 0, "ml_lift_r": None, "ml": None}
    t = scorer.tally
    return {"scored_signals": t.scored, "accepted": t.scored - t.rejected, "ml_rejected": t.rejected,
            "ml_lift_r": round(t.lift_r, 4), "ml_lift_outcomes": t.outcomes, "ml": scorer.summary()}


def operator_lines(doc: Mapping[str, Any]) -> list[str]:
    if doc.get("ml") is None:
        return ["ML filter: off"]
    lift = doc.get("ml_lift_r")
    lines = [f"ML filter: scored {doc['scored_signals']:,}, accepted {doc['accepted']:,}, rejected "
             f"{doc['ml_rejected']:,}; lift {'—' if lift is None else f'{lift:+.3f}R'} (model in force at each "
             "signal)"]
    for name, s in doc["ml"].items():
        model = f"v{s['champion']} in force" if s["champion"] else "no model in force (every signal taken)"
        lines.append(f"  {name}: {model}; {s['promotions']} of {s['trainings']} trainings promoted, "
                     f"{s['outcomes']:,} outcomes")
        if s.get("last"):
            lines.append(f"    last v{s['last']['version']}: {s['last']['why']}")
    return lines


@dataclass
class StrategyReport:
    strategy: str
    n: int
    base_rate: float
    model: Evaluation
    base: Evaluation
    evidence: Evidence  # the gate's rule on the pooled out-of-sample slices
    placebo: Evaluation | None  # the same recipe on shuffled labels: what "no signal" scores

    @property
    def helps(self) -> bool:
        """The gate would promote it: enough outcomes, and both lower bounds above zero."""
        return self.evidence.shown

    def as_dict(self) -> dict[str, Any]:
        out = {"strategy": self.strategy, "outcomes": self.n, "base_rate": round(self.base_rate, 4),
               "model": self.model.summary(), "base": self.base.summary(), "helps": self.helps,
               "evidence": self.evidence.as_json(),
               "folds": [{"as_of_ms": m["as_of_ms"], "train": m["train"], "test": m["test"],
                          "model_brier": m["brier"], "base_brier": b["brier"], "model_lift_r": m["lift_r"],
                          "accepted": m["accepted"], "threshold": m["threshold"]}
                         for m, b in zip(self.model.folds, self.base.folds, strict=True)],
               **self.model.charts()}
        if self.placebo is not None:
            out["placebo"] = self.placebo.summary()
        return out


def walk_forward_report(datasets: Mapping[str, Dataset], settings: FilterSettings | None = None, *,
                        placebo: bool = True) -> list[StrategyReport]:
    """The gate's walk-forward and evidence for each strategy's full history: the recipe vs no filter (the
    base rate), with the same folds, recipe, thresholds and rule as the gate (nothing tuned here)."""
    settings = settings or FilterSettings()
    out = []
    for name, data in sorted(datasets.items()):
        candidates = [Candidate("model", settings.recipe), Candidate("base")]
        if placebo:
            candidates.append(Candidate("placebo", Recipe(settings.recipe.config, shuffle_labels=True)))
        evals = walk_forward(data, candidates, config=settings.walk, threshold=settings.threshold,
                             min_p=settings.min_p)
        m = evals["model"]
        out.append(StrategyReport(name, len(data), data.base_rate, m, evals["base"],
                                  assess(m.p, m.base, m.y, m.r, m.accepted, settings.rule), evals.get("placebo")))
    return out


def verdict(reports: Sequence[StrategyReport]) -> str:
    helped = [r.strategy for r in reports if r.helps]
    if not any(r.model.n for r in reports):
        return "Not enough outcomes to judge the filter on any strategy: the filter takes every signal."
    if not helped:
        return ("The filter has not shown that it helps on any strategy: on none are the lower bounds of its EV lift "
                "and of its Brier skill against the base rate both above zero out of sample, so the gate keeps "
                "'no filter' (every signal taken, lift 0) until they are.")
    rest = [r.strategy for r in reports if not r.helps]
    text = (f"The filter helps on {', '.join(helped)}: the lower bounds of its EV lift and of its Brier skill "
            "against the base rate are both above zero out of sample")
    if rest:
        text += f"; on {', '.join(rest)} there is not enough evidence yet (the filter takes every signal there)"
    return text + "."


def format_report(reports: Sequence[StrategyReport], settings: FilterSettings) -> list[str]:
    w, rule = settings.walk, settings.rule
    lines = [f"walk-forward: {w.folds} expanding-window folds over the latest {w.eval_frac:.0%} of each strategy's "
             f"outcomes (purged); take a signal when EV >= a threshold chosen on earlier outcomes (at least "
             f"{settings.threshold:+.2f}R) and p >= {settings.min_p:.2f}",
             f"evidence: {rule.confidence:.0%} lower bounds of a moving-block bootstrap ({rule.rounds} rounds) "
             f"above zero for both EV lift and Brier skill, over at least {rule.min_outcomes} outcomes", ""]
    for r in reports:
        lines.append(f"{r.strategy}: {r.n} outcomes, base rate {r.base_rate:.3f}")
        lines.append(f"  {'fold':<5}{'train':>7}{'test':>6}{'Brier model':>13}{'Brier base':>12}{'lift R':>9}"
                     f"{'taken':>7}{'EV >=':>8}")
        for i, (m, b) in enumerate(zip(r.model.folds, r.base.folds, strict=True), 1):
            lines.append(f"  {i:<5}{m['train']:>7}{m['test']:>6}{m['brier']:>13.4f}{b['brier']:>12.4f}"
                         f"{m['lift_r']:>+9.3f}{m['accepted']:>7}{m['threshold']:>+8.2f}")
        if r.model.n:
            s = r.model.summary()
            auc = "—" if s["auc"] is None else f"{s['auc']:.3f}"
            lines.append(f"  {'all':<5}{'':>7}{r.model.n:>6}{r.model.brier:>13.4f}{r.base.brier:>12.4f}"
                         f"{r.model.lift:>+9.3f}{s['accepted']:>7}   AUC {auc}")
        if r.placebo is not None and r.placebo.n:
            lines.append(f"  placebo (shuffled labels): Brier {r.placebo.brier:.4f}, lift {r.placebo.lift:+.3f}R")
        lines.append(f"  → {'helps' if r.helps else 'not enough evidence yet'}: {r.evidence.text()}")
        lines.append("")
    lines.append(verdict(reports))
    return lines
