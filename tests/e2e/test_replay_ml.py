"""`python -m bot replay` with the ML filter (on by default) as real processes: reproducible JSON,
a SIGKILLed replay resumes to the same digest and the same ML figures, and `ml report` / `ml models`
read what the replay left."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import CANDLES
from tests.fakes.clock import wait_until
from tests.hostproc import desk_env, run

DATA = str(CANDLES / "binance_spot_2020-12_2021-07")
WINDOW = ["--from", "2021-03-01", "--to", "2021-04-15"]
ML_KEYS = ("phantom_digest", "scored_signals", "accepted", "rejected", "ml_lift_r", "ml", "signals", "executed")


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _checkpoint(db: Path) -> str | None:
    """When the replay's newest checkpoint was taken (None before the first, or while the file is busy)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT max(taken_at) FROM bot_states WHERE kind = 'checkpoint'").fetchone()[0]
    except sqlite3.Error:
        return None


def _replay(tmp_path: Path, db: str, *extra: str) -> dict:
    done = run(["replay", "--data", DATA, *WINDOW, "--db", db, "--json", *extra], tmp_path, desk_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return _summary(done.stdout)


def test_replay_with_the_filter_is_reproducible_and_resumable(tmp_path: Path) -> None:
    first = _replay(tmp_path, f"sqlite:///{tmp_path}/a.db")
    assert first["scored_signals"] > 0 and first["accepted"] + first["rejected"] == first["scored_signals"]
    assert first["rejected"] > 0 and first["ml_lift_r"] is not None
    assert any(s["promotions"] for s in first["ml"].values()), first["ml"]
    second = _replay(tmp_path, f"sqlite:///{tmp_path}/b.db")
    assert {k: second[k] for k in ML_KEYS} == {k: first[k] for k in ML_KEYS}

    # killed three times (after models were trained and promoted), then completed
    db = f"sqlite:///{tmp_path}/kill.db"
    args = [sys.executable, "-m", "bot", "replay", "--data", DATA, *WINDOW, "--db", db, "--json",
            "--flush-every", "1500"]
    kills = 0
    for _ in range(3):  # each run killed once it has written a newer checkpoint than the run before
        before = _checkpoint(tmp_path / "kill.db")
        proc = subprocess.Popen(args, cwd=tmp_path, env=desk_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        asyncio.run(wait_until(lambda: proc.poll() is not None or _checkpoint(tmp_path / "kill.db") != before,  # noqa: B023
                               "a newer checkpoint", 300, every=0.2))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "the replay finished before it could be killed"
    done = subprocess.run(args, cwd=tmp_path, env=desk_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    final = _summary(done.stdout)
    assert final["resumed"]
    assert {k: final[k] for k in ML_KEYS} == {k: first[k] for k in ML_KEYS}

    # what the replay left: the registry and the walk-forward report on its phantoms
    models = run(["ml", "models", "--db", f"sqlite:///{tmp_path}/a.db", "--bot", "replay"], tmp_path, desk_env())
    assert models.returncode == 0, models.stderr[-2000:]
    assert "CHAMPION" in models.stdout and "refused" in models.stdout
    report = run(["ml", "report", "--db", f"sqlite:///{tmp_path}/a.db", "--bot", "replay", "--json",
                  "--no-placebo"], tmp_path, desk_env(), timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    doc = _summary(report.stdout)
    assert {s["strategy"] for s in doc["strategies"]} == {"trend_pullback", "mean_reversion", "scalp"}
    assert "filter" in doc["verdict"]
    for s in doc["strategies"]:
        assert s["model"]["brier"] is not None and s["base"]["brier"] is not None and s["folds"]


def test_replay_without_the_filter(tmp_path: Path) -> None:
    doc = _replay(tmp_path, f"sqlite:///{tmp_path}/n.db", "--no-ml", "--to", "2021-03-10")
    assert doc["scored_signals"] == 0 and doc["ml"] is None and doc["ml_lift_r"] is None
    assert doc["rejected"] == 0
