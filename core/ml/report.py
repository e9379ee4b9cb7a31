"""What the ML filter reports: the replay's figures (measured on the replay itself, with the model in
force at each signal) and the walk-forward report (`python -m bot ml report`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.ml import metrics
from core.ml.dataset import Dataset
from core.ml.filter import FilterSettings, MLScorer
from core.ml.gate import Candidate, Evaluation, walk_forward
from core.ml.model import Recipe
from core.phantom import Phantom


def replay_fields(counters: Mapping[str, int], closed: Sequence[Phantom], scorer: MLScorer | None) -> dict[str, Any]:
    """scored_signals / accepted / rejected, and ml_lift_r: the expectancy (R) of the scored signals the
    filter took minus that of every scored signal, over the closed phantoms (gap exits aside). Out of
    sample by construction: each signal was scored by the model in force when it was emitted."""
    scored = [p for p in closed if p.ml_score is not None and p.exit_reason != "gap" and p.realized_r is not None]
    r = np.array([p.realized_r for p in scored], dtype=np.float64)
    taken = np.array([p.action != "REJECTED" for p in scored], dtype=bool)
    n_scored = counters.get("scored_signals", 0)
    rejected = counters.get("signals_rejected", 0)
    return {
        "scored_signals": n_scored, "accepted": n_scored - rejected, "rejected": rejected,
        "ml_lift_r": round(metrics.ev_lift(r, taken), 4) if len(scored) else None,
        "ml": None if scorer is None else scorer.summary(),
    }


def operator_lines(doc: Mapping[str, Any]) -> list[str]:
    if doc.get("ml") is None:
        return ["ML filter: off"]
    lift = doc.get("ml_lift_r")
    champions = ", ".join(f"{name} {'v' + str(s['champion']) if s['champion'] else 'no model'} "
                          f"({s['promotions']}/{s['trainings']} promoted)" for name, s in doc["ml"].items())
    return [f"ML filter: scored {doc['scored_signals']:,}, accepted {doc['accepted']:,}, rejected "
            f"{doc['rejected']:,}; lift {'—' if lift is None else f'{lift:+.3f}R'} (model in force at each signal)",
            f"  models: {champions or 'none trained'}"]


@dataclass
class StrategyReport:
    strategy: str
    n: int
    base_rate: float
    model: Evaluation
    base: Evaluation
    placebo: Evaluation | None  # the same recipe on shuffled labels: what "no signal" scores

    @property
    def helps(self) -> bool:
        """The gate's own rule against no model, on the pooled out-of-sample folds (point estimates)."""
        return self.model.n > 0 and self.model.brier < self.base.brier and self.model.lift > 0

    def intervals(self, rounds: int = 2000, seed: int = 0) -> dict[str, list[float]]:
        """90% bootstrap intervals (resampling the pooled test outcomes; approximate: it ignores their
        serial correlation) of the Brier difference (model - base; < 0 is better) and of the EV lift."""
        m, b = self.model, self.base
        if not m.n:
            return {}
        idx = np.random.default_rng(seed).integers(0, m.n, size=(rounds, m.n))
        d_brier = ((m.p[idx] - m.y[idx]) ** 2).mean(axis=1) - ((b.p[idx] - b.y[idx]) ** 2).mean(axis=1)
        r, acc = m.r[idx], m.accepted[idx]
        n_acc = acc.sum(axis=1)
        taken = np.where(n_acc > 0, (r * acc).sum(axis=1) / np.maximum(n_acc, 1), 0.0)
        lift = taken - r.mean(axis=1)
        return {"brier_diff_90": [round(float(x), 4) for x in np.quantile(d_brier, [0.05, 0.95])],
                "lift_r_90": [round(float(x), 4) for x in np.quantile(lift, [0.05, 0.95])]}

    @property
    def clear(self) -> bool:
        """Both 90% intervals exclude "no better than the base rate"."""
        ci = self.intervals()
        return bool(ci) and ci["brier_diff_90"][1] < 0 and ci["lift_r_90"][0] > 0

    def as_dict(self) -> dict[str, Any]:
        out = {"strategy": self.strategy, "outcomes": self.n, "base_rate": round(self.base_rate, 4),
               "model": self.model.summary(), "base": self.base.summary(), "helps": self.helps,
               "clear": self.clear, **self.intervals(),
               "folds": [{"as_of_ms": m["as_of_ms"], "train": m["train"], "test": m["test"],
                          "model_brier": m["brier"], "base_brier": b["brier"], "model_lift_r": m["lift_r"],
                          "accepted": m["accepted"]} for m, b in zip(self.model.folds, self.base.folds, strict=True)],
               **self.model.charts()}
        if self.placebo is not None:
            out["placebo"] = self.placebo.summary()
        return out


def walk_forward_report(datasets: Mapping[str, Dataset], settings: FilterSettings | None = None, *,
                        placebo: bool = True) -> list[StrategyReport]:
    """The gate's walk-forward for each strategy's full history: the recipe vs no model (base rate),
    with the same folds, recipe and decision rule as the live gate (nothing tuned here)."""
    settings = settings or FilterSettings()
    out = []
    for name, data in sorted(datasets.items()):
        candidates = [Candidate("model", settings.recipe), Candidate("base")]
        if placebo:
            candidates.append(Candidate("placebo", Recipe(settings.recipe.config, shuffle_labels=True)))
        evals = walk_forward(data, candidates, config=settings.walk, threshold=settings.threshold,
                             min_p=settings.min_p)
        out.append(StrategyReport(name, len(data), data.base_rate, evals["model"], evals["base"],
                                  evals.get("placebo")))
    return out


def verdict(reports: Sequence[StrategyReport]) -> str:
    helped = [r.strategy for r in reports if r.helps]
    tested = [r for r in reports if r.model.n]
    if not tested:
        return "Not enough outcomes to judge the filter on any strategy."
    if not helped:
        return ("The filter does NOT help on this data: on no strategy does the model beat the base rate on "
                "both Brier score and EV lift out of sample; the gate would keep 'no model' (signals unscored).")
    clear = [r.strategy for r in reports if r.helps and r.clear]
    noise = [s for s in helped if s not in clear]
    text = ("The filter helps on every strategy" if len(helped) == len(tested) else
            f"The filter helps on {', '.join(helped)} only") + \
        " (better Brier than the base rate and a positive EV lift, out of sample)"
    if noise:
        text += (f"; on {', '.join(noise)} the 90% intervals still include 'no better than the base rate', "
                 "so that gain is not established")
    if len(helped) < len(tested):
        text += "; on the other strategies it does not help"
    return text + "."


def format_report(reports: Sequence[StrategyReport], settings: FilterSettings) -> list[str]:
    w = settings.walk
    lines = [f"walk-forward: {w.folds} expanding-window folds over the latest {w.eval_frac:.0%} of each strategy's "
             f"outcomes (purged); decision EV >= {settings.threshold:+.2f}R and p >= {settings.min_p:.2f}", ""]
    for r in reports:
        lines.append(f"{r.strategy}: {r.n} outcomes, base rate {r.base_rate:.3f}")
        lines.append(f"  {'fold':<5}{'train':>7}{'test':>6}{'Brier model':>13}{'Brier base':>12}{'lift R':>9}"
                     f"{'taken':>7}")
        for i, (m, b) in enumerate(zip(r.model.folds, r.base.folds, strict=True), 1):
            lines.append(f"  {i:<5}{m['train']:>7}{m['test']:>6}{m['brier']:>13.4f}{b['brier']:>12.4f}"
                         f"{m['lift_r']:>+9.3f}{m['accepted']:>7}")
        if r.model.n:
            s = r.model.summary()
            lines.append(f"  {'all':<5}{'':>7}{r.model.n:>6}{r.model.brier:>13.4f}{r.base.brier:>12.4f}"
                         f"{r.model.lift:>+9.3f}{s['accepted']:>7}   AUC {s['auc'] if s['auc'] is not None else '—'}")
        ci = r.intervals()
        if ci:
            lines.append(f"  90% intervals: Brier model - base [{ci['brier_diff_90'][0]:+.4f}, "
                         f"{ci['brier_diff_90'][1]:+.4f}], EV lift [{ci['lift_r_90'][0]:+.3f}, "
                         f"{ci['lift_r_90'][1]:+.3f}]R")
        if r.placebo is not None and r.placebo.n:
            lines.append(f"  placebo (shuffled labels): Brier {r.placebo.brier:.4f}, lift {r.placebo.lift:+.3f}R")
        lines.append(f"  → {'helps' if r.helps else 'does not help'}")
        lines.append("")
    lines.append(verdict(reports))
    return lines
