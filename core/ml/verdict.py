"""Which refused challengers are worth an operator's decision (light: the desk imports it without
scikit-learn)."""

from __future__ import annotations

from typing import Any


def worth_asking(report: dict[str, Any]) -> bool:
    """A refused challenger is worth an operator's "promote anyway?" only when it measured better than what is
    in force (the champion, or no filter: lift 0 at the base rate's Brier) on both figures out of sample and
    was refused for want of evidence. One that measured worse is information: promoting it would choose the
    worse model."""
    challenger, incumbent = report.get("challenger") or {}, report.get("champion") or {}
    lift, brier = challenger.get("lift_r"), challenger.get("brier")
    if lift is None or brier is None:
        return False
    in_force_lift = incumbent.get("lift_r") or 0.0
    in_force_brier = incumbent.get("brier")
    return lift > max(0.0, in_force_lift) and (in_force_brier is None or brier <= in_force_brier)
