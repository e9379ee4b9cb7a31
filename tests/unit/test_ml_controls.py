"""Controls with a known truth: the ML filter, run as a replay runs it (signals scored by the model in force,
every outcome observed when the candle that closed it is complete, verdicts in force a market day later),
over seeded synthetic signal markets.

- positive: a feature the strategies compute (RSI) genuinely moves the win probability. The filter must find
  it: a promotion whose evidence bounds (EV lift and Brier skill against the base rate) are above zero, and a
  positive lift on the signals it scored afterwards (out of sample by construction);
- negative: outcomes independent of every feature. The filter must stay out: no promotion, nothing scored,
  lift exactly 0 (several seeds: a gate that lets noise through fails one of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from core.ml.dataset import FEATURE_NAMES
from core.ml.filter import FilterSettings, MLScorer
from core.phantom import Phantom
from core.signal import Signal

T0 = datetime(2024, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=15)
RR = 2.0


@dataclass
class Market:
    scored: int
    promotions: list[dict]
    refusals: list[dict]
    lift_r: float
    outcomes: int


def features(rng: np.random.Generator) -> dict[str, float]:
    f = {name: float(v) for name, v in zip(FEATURE_NAMES, rng.normal(size=len(FEATURE_NAMES)), strict=True)}
    f.update(rsi=float(rng.uniform(15, 85)), reward_risk=RR, strategy_win_rate=0.4, side=1.0)
    return f


def run_market(seed: int, strength: float, signals: int = 3000) -> Market:
    """One signal every two candles; each resolves 2..24 candles later, won with probability
    sigmoid(logit(0.36) + strength * (rsi - 50) / 20): RR 2, so the average signal is about break-even."""
    rng = np.random.default_rng(seed)
    scorer = MLScorer("control", FilterSettings())
    closing: dict[int, list[Phantom]] = {}
    for i in range(signals * 2 + 30):
        for p in closing.pop(i, []):  # outcomes first: the engine updates phantoms before strategies run
            scorer.observe(p)
        if i % 2 or i >= signals * 2:
            continue
        at = T0 + i * STEP
        f = features(rng)
        signal = Signal(f"s{i:06d}", "control", "BTCUSDT", "15", "mean_reversion", "long", Decimal(100),
                        Decimal(99), Decimal(100 + RR), at, f)
        score = scorer.score(signal)
        p_win = 1 / (1 + np.exp(-(np.log(0.36 / 0.64) + strength * (f["rsi"] - 50) / 20)))
        won = bool(rng.random() < p_win)
        hold = int(rng.integers(2, 25))
        p = Phantom(signal.id, "control", "BTCUSDT", "15", "mean_reversion", "long", Decimal(100), Decimal(99),
                    Decimal(100 + RR), at, "EXECUTED" if score.take else "REJECTED", score.reason, score.p_win,
                    score.ev_r, f)
        p.status, p.outcome = "closed", "win" if won else "loss"
        p.exit_reason, p.realized_r = ("tp", RR) if won else ("sl", -1.0)
        p.exit_time, p.candles_seen = at + hold * STEP, hold
        closing.setdefault(i + hold, []).append(p)
    reports = [t.report for t in scorer.pending]
    return Market(scorer.tally.scored, [r for r in reports if r["promoted"]], [r for r in reports if not r["promoted"]],
                  scorer.tally.lift_r, scorer.tally.outcomes)


def test_positive_control_the_filter_finds_a_real_signal() -> None:
    m = run_market(seed=1, strength=1.2)
    assert m.promotions, [r["why"] for r in m.refusals]
    first = m.promotions[0]["evidence"]
    assert first["lift_lo"] > 0 and first["skill_lo"] > 0 and first["n"] >= first["min_outcomes"]
    assert m.promotions[0]["challenger"]["brier"] < m.promotions[0]["base_rate"]["brier"]
    assert m.promotions[0]["importances"][0][0] == "rsi"  # it learnt from the feature that matters
    assert m.scored > 1000 and m.outcomes > 1000
    assert m.lift_r > 0.1, m.lift_r  # out of sample: the model in force at each signal


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_negative_control_the_filter_stays_out_of_noise(seed: int) -> None:
    m = run_market(seed=seed, strength=0.0)
    assert m.refusals and not m.promotions, [r["why"] for r in m.promotions]
    assert all(r["why"].startswith("not enough evidence yet") for r in m.refusals)
    assert m.scored == 0 and m.lift_r == 0.0  # every signal taken: lift exactly 0
