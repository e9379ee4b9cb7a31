"""What `optimize` shows when its study stops: the top trials with their in-sample figures (which chose
them) and their out-of-sample figures (computed here, once, never used to choose), how much of the edge
survived (OOS/IS of the objective), the parameters' importance (Optuna's PED-ANOVA evaluator), and with
`--out DIR` the same as results.md and trials.csv, with optimize.png (history and importances).

The top rows are the scored trials, best first; when fewer trials than --top were scored, the failed ones
that ran every in-sample window fill the table (most in-sample trades first), marked failed, so that a
study where nothing passed still shows what its parameters did out of sample.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bot.cli import EXIT_OK
from bot.optimize import BOT_ID, FINISHED, Outcome, Prepared, trial_candidate, trial_failure, trial_figures
from core.config import BotConfig
from core.market.candle import ms_to_dt
from core.optimize.evaluate import WindowReplayer
from core.optimize.objectives import OBJECTIVES, SHORT, Figures, Objective, figures
from core.optimize.space import Candidate


@dataclass(frozen=True)
class Row:
    trial: int
    value: float | None  # the in-sample objective; None: failed
    failed: str | None
    in_sample: Figures
    out_of_sample: Figures | None  # None: its parameters do not make a valid configuration
    candidate: Candidate

    def ratio(self, objective: Objective) -> float | None:
        """OOS / IS of the objective: the share of the in-sample edge that survived (IS must be positive)."""
        oos = self.out_of_sample.value(objective) if self.out_of_sample else None
        return oos / self.value if oos is not None and self.value is not None and self.value > 0 else None

    def as_json(self, objective: Objective) -> dict[str, Any]:
        return {"trial": self.trial, "value": self.value, "failed": self.failed,
                "in_sample": self.in_sample.as_json(),
                "out_of_sample": None if self.out_of_sample is None else self.out_of_sample.as_json(),
                "oos_over_is": self.ratio(objective), **self.candidate.as_json()}


def top_trials(trials: list[FrozenTrial], n: int) -> list[FrozenTrial]:
    scored = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
                    key=lambda t: (-(t.value or 0.0), t.number))
    failed = [t for t in trials if t.state == TrialState.PRUNED and trial_figures(t) is not None]
    failed.sort(key=lambda t: (-(f.trades if (f := trial_figures(t)) else 0), t.number))
    return (scored + failed)[:n]


def rows_of(p: Prepared, trials: list[FrozenTrial]) -> list[Row]:
    replayer = WindowReplayer(p.market, ml=p.spec.ml)  # one for all rows: each window warmed once
    base = BotConfig(id=BOT_ID, symbols=p.market.symbols, slow_interval=p.market.slow,
                     fast_interval=p.market.fast, strategies={p.spec.strategy: {}})
    rows = []
    for t in trials:
        candidate, in_sample = trial_candidate(t), trial_figures(t)
        if candidate is None or in_sample is None:
            continue
        config = candidate.config(base, p.spec.strategy)
        runs = [replayer.run(config, w) for w in p.walk.out_of_sample]
        rows.append(Row(t.number, t.value if t.state == TrialState.COMPLETE else None, trial_failure(t), in_sample,
                        figures([r.closed for r in runs], config.capital), candidate))
    return rows


def kept(rows: list[Row], objective: Objective) -> float | None:
    """The in-sample edge the scored top trials kept out of sample: their mean OOS objective over their mean IS
    objective (a ratio of means: a trial whose in-sample figure is near zero cannot blow it up)."""
    pairs = [(r.value, oos) for r in rows if r.value is not None and r.out_of_sample is not None
             and (oos := r.out_of_sample.value(objective)) is not None]
    if not pairs or (mean_is := statistics.fmean(p[0] for p in pairs)) <= 0:
        return None
    return statistics.fmean(p[1] for p in pairs) / mean_is


def verdict_line(kept: float | None) -> str:
    if kept is None:
        return "in-sample edge kept out of sample: - (no scored top trial with a positive in-sample figure)"
    plain = ("none of it survived: these parameters fit the in-sample windows, not the market" if kept <= 0
             else "less than half survived" if kept < 0.5 else "most of it survived")
    return f"in-sample edge kept out of sample (top trials, mean OOS / mean IS): {kept:.2f} — {plain}"


def importances(study: optuna.Study) -> dict[str, float]:
    """Each parameter's importance for reaching the best in-sample trials (Optuna's PED-ANOVA evaluator: which
    values set the top 10 % of scored trials apart; no scikit-learn, a few ms); {} with too few scored trials."""
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return {}
    try:
        return dict(get_param_importances(study, evaluator=PedAnovaImportanceEvaluator()))
    except (ValueError, RuntimeError):
        return {}


def counts(trials: list[FrozenTrial], target: int) -> dict[str, int]:
    failed = [trial_failure(t) or "" for t in trials if t.state == TrialState.PRUNED]
    return {"target": target, "finished": sum(t.state in FINISHED for t in trials),
            "scored": sum(t.state == TrialState.COMPLETE for t in trials), "failed": len(failed),
            "pruned_by_median": sum(w.startswith("pruned") for w in failed),
            "invalid": sum(w.startswith("invalid") for w in failed),
            "interrupted": sum(t.state == TrialState.FAIL for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials)}


def report(args: Any, p: Prepared, study: optuna.Study, run_id: str, elapsed_s: float) -> int:
    trials = study.get_trials(deepcopy=False)
    rows = rows_of(p, top_trials(trials, args.top))
    objective = p.spec.objective
    ours = sorted(t.number for t in trials
                  if t.state in FINISHED and (outcome := Outcome.of(t)) is not None and outcome.run == run_id)
    doc: dict[str, Any] = {
        "study": p.study, "storage": p.where.shown, "spec": p.spec.model_dump(mode="json"),
        "windows": [{"window": w.label, "start": ms_to_dt(w.start_ms).isoformat(),
                     "end": ms_to_dt(w.end_ms).isoformat()} for w in p.walk.windows],
        "search": [d.describe() for d in p.space.dimensions], "fixed": p.space.fixed,
        "trials": counts(trials, args.trials),
        "run": {"id": run_id, "trials": ours, "elapsed_s": round(elapsed_s, 3),
                "trials_per_min": round(len(ours) / elapsed_s * 60, 2) if elapsed_s > 0 else None},
        "top": [r.as_json(objective) for r in rows],
        "best": next((r.as_json(objective) for r in rows if r.value is not None), None),
        "oos_over_is": kept(rows, objective),
        "importance": importances(study),
    }
    if args.out is not None:
        write_out(args.out, p, trials, rows, doc)
    if args.json:
        sys.stdout.write(json.dumps(doc, sort_keys=True, default=str) + "\n")
    else:
        sys.stdout.write("\n".join(render_text(p, rows, doc)) + "\n")
        if args.out is not None:
            sys.stdout.write(f"written: {args.out / 'results.md'}, {args.out / 'trials.csv'}, "
                             f"{args.out / 'optimize.png'}\n")
    sys.stdout.flush()
    return EXIT_OK


# --- text and Markdown ---------------------------------------------------------------------------------------
def _fmt(objective: Objective, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}R" if objective == "expectancy" else f"{value:.2f}"


def _values(c: Candidate) -> str:
    parts = [f"{k}={_short(v)}" for k, v in c.params.items()] + [f"bot.{k}={_short(v)}" for k, v in c.settings.items()]
    return " ".join(parts)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


HEADER = ("trial", "IS", "IS trades", "OOS", "OOS trades", "OOS/IS", "IS net PnL", "OOS net PnL", "note")


def table(p: Prepared, rows: list[Row]) -> list[tuple[str, ...]]:
    objective = p.spec.objective
    out: list[tuple[str, ...]] = []
    for r in rows:
        oos = r.out_of_sample
        ratio = r.ratio(objective)
        out.append((str(r.trial), _fmt(objective, r.value if r.value is not None else r.in_sample.value(objective)),
                    str(r.in_sample.trades), _fmt(objective, oos.value(objective) if oos else None),
                    str(oos.trades) if oos else "-", "-" if ratio is None else f"{ratio:.2f}",
                    f"{r.in_sample.net_pnl:,.0f}", f"{oos.net_pnl:,.0f}" if oos else "-",
                    f"FAILED: {r.failed}" if r.failed else ""))
    return out


def _lines(p: Prepared, doc: dict[str, Any]) -> list[str]:
    spec, n = p.spec, doc["trials"]
    windows = "  ".join(f"{w['window']} {w['start'][:16].replace('T', ' ')} → {w['end'][:16].replace('T', ' ')}"
                        for w in doc["windows"])
    fixed = "; ".join(f"{k} ({v})" for k, v in p.space.fixed.items())
    run = doc["run"]
    return [
        f"strategy {spec.strategy} (version {spec.strategy_version}), {','.join(spec.symbols)} on "
        f"{spec.intervals[0]}/{spec.intervals[1]}, {spec.start[:16]} → {spec.end[:16]} UTC"
        f"{', with the ML filter' if spec.ml else ', without the ML filter'}",
        f"walk-forward {spec.scheme}, {spec.windows} fold(s), {spec.oos_fraction:.0%} out of sample: {windows}",
        f"objective: {OBJECTIVES[spec.objective]}, in-sample windows only; under {spec.min_trades} trades a "
        "trial fails",
        f"search: {', '.join(doc['search'])}" + (f"; fixed: {fixed}" if fixed else ""),
        f"trials: {n['finished']} finished of {n['target']} ({n['scored']} scored, {n['failed']} failed: "
        f"{n['pruned_by_median']} pruned by the median, {n['invalid']} invalid combinations, the rest under "
        f"--min-trades or undefined), {n['interrupted']} interrupted; this run {len(run['trials'])} in "
        f"{run['elapsed_s']:.1f} s ({run['trials_per_min'] or 0:.1f}/min)"
        + ("" if run["trials"] else " — the study was full already: a larger --trials runs more"),
    ]


def render_text(p: Prepared, rows: list[Row], doc: dict[str, Any]) -> list[str]:
    out = [f"phantomdesk optimize — study {p.study} ({p.where.shown})", *_lines(p, doc), ""]
    if not rows:
        out.append("no trial has run every in-sample window yet")
        return out
    out.append(f"top trials ({OBJECTIVES[p.spec.objective]}; in-sample chooses, out-of-sample is only reported):")
    body = [HEADER, *table(p, rows)]
    widths = [max(len(line[i]) for line in body) for i in range(len(HEADER))]
    out += ["  " + "  ".join(c.rjust(w) if i < len(HEADER) - 1 else c for i, (c, w) in
                             enumerate(zip(line, widths, strict=True))).rstrip() for line in body]
    out.append(verdict_line(doc["oos_over_is"]))
    out += [f"  #{r.trial}: {_values(r.candidate)}" for r in rows]
    if doc["importance"]:
        out.append("parameter importance (PED-ANOVA: what sets the best in-sample trials apart): " +
                   ", ".join(f"{k} {v:.2f}" for k, v in doc["importance"].items()))
    if (best := doc["best"]) is not None:
        out.append(f"apply one: python -m bot optimize apply {p.study} --trial {best['trial']} --bot BOT_ID"
                   + (f" --storage {p.where.shown.split(' ')[0]}" if p.where.url else ""))
    return out


def render_markdown(p: Prepared, rows: list[Row], doc: dict[str, Any]) -> str:
    out = [f"# optimize — study `{p.study}`", "", f"storage: `{p.where.shown}`", ""]
    out += [f"- {line}" for line in _lines(p, doc)] + [""]
    if rows:
        out += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(line) + " |" for line in table(p, rows)]
        out += ["", verdict_line(doc["oos_over_is"])]
        out += ["", "| trial | parameters |", "|---|---|"]
        out += [f"| {r.trial} | `{_values(r.candidate)}` |" for r in rows]
    if doc["importance"]:
        out += ["", "| parameter | importance (PED-ANOVA) |", "|---|---|"]
        out += [f"| {k} | {v:.3f} |" for k, v in doc["importance"].items()]
    return "\n".join(out) + "\n"


# --- files ---------------------------------------------------------------------------------------------------
FIGURES = ("trades", "expectancy", "profit_factor", "sharpe", "calmar", "win_rate", "net_pnl", "max_drawdown_pct")


def write_out(folder: Path, p: Prepared, trials: list[FrozenTrial], rows: list[Row], doc: dict[str, Any]) -> None:
    from bot.charts import optimization_chart  # matplotlib only when asked for

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.md").write_text(render_markdown(p, rows, doc), encoding="utf-8")
    oos = {r.trial: r.out_of_sample for r in rows}
    names = [d.name for d in p.space.dimensions]
    with (folder / "trials.csv").open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["trial", "state", "value", "failed", "worker", "duration_s", *(f"is_{k}" for k in FIGURES),
                      *(f"oos_{k}" for k in FIGURES), *names])
        for t in trials:
            if t.state not in FINISHED:
                continue
            f_is, f_oos, c = trial_figures(t), oos.get(t.number), trial_candidate(t)
            values = {} if c is None else {**c.params, **{f"bot.{k}": v for k, v in c.settings.items()}}
            duration = t.duration.total_seconds() if t.duration else None
            value = t.value if t.state == TrialState.COMPLETE else None  # Optuna gives a pruned trial its last report
            out.writerow([t.number, t.state.name.lower(), value, trial_failure(t) or "", t.user_attrs.get("worker"),
                          duration, *(_cell(f_is, k) for k in FIGURES), *(_cell(f_oos, k) for k in FIGURES),
                          *(values.get(n, "") for n in names)])
    history = [(t.number, t.value if t.state == TrialState.COMPLETE else None) for t in trials if t.state in FINISHED]
    chart = optimization_chart(history, doc["importance"], f"Study {p.study}", f"in-sample {SHORT[p.spec.objective]}")
    (folder / "optimize.png").write_bytes(chart)


def _cell(f: Figures | None, key: str) -> Any:
    return "" if f is None else f.as_json()[key]
