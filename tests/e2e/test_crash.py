"""Crash consistency: a replay killed with SIGKILL at random moments, restarted each time with the same
command, ends with the ledger and phantoms of a run never interrupted — on SQLite and on PostgreSQL.

`make test` kills 5 times per database; `make test-long` (PD_CRASH_KILLS=20) 20 times.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CANDLES
from tests.hostproc import desk_env

DATA = str(CANDLES / "binance_spot_2020-12_2021-07")
KILLS = int(os.environ.get("PD_CRASH_KILLS", "5"))
# the short suite replays seven weeks; the long mode the whole data set (ML filter on in both, every trained
# model in force: seven weeks hold too few outcomes for the evidence gate, and the point is that models trained
# beside the replay, and trainings in flight at a kill, change nothing)
WINDOW = ["--to", "2021-01-20"] if KILLS < 20 else []
DIGESTS = ("phantom_digest", "ledger_digest", "trades_closed", "phantoms_closed", "signals", "scored_signals",
           "ml_rejected", "ml_lift_r")


def _args(db: str) -> list[str]:
    return [sys.executable, "-m", "bot", "replay", "--data", DATA, *WINDOW, "--db", db, "--json",
            "--flush-every", "1000", "--ml-gate", "always"]


def _finish(args: list[str], cwd: Path) -> dict:
    done = subprocess.run(args, cwd=cwd, env=desk_env(SECRET_KEY="k" * 40), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cwd = tmp_path_factory.mktemp("reference")
    return _finish(_args(f"sqlite:///{cwd}/ref.db"), cwd)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_sigkill_at_random_moments(tmp_path: Path, database: str, reference: dict,
                                   request: pytest.FixtureRequest) -> None:
    db = f"sqlite:///{tmp_path}/crash.db" if database == "sqlite" else request.getfixturevalue("pg_url")
    rng = random.Random(f"{database}-{KILLS}")  # reproducible moments, reported on failure
    loop_s = reference["candles"] / reference["candles_per_s"]  # the replay itself, start-up aside
    kills, delays = 0, []
    log = tmp_path / "replay.err"
    for attempt in range(KILLS * 4):
        if kills >= KILLS:
            break
        with log.open("w") as err:
            proc = subprocess.Popen(_args(db), cwd=tmp_path, env=desk_env(SECRET_KEY="k" * 40),
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            if attempt < 2:  # two kills while it starts up (imports, migrations, restore): before it resumes
                until = time.monotonic() + rng.uniform(0.3, 2.0)
                while time.monotonic() < until and "resuming:" not in log.read_text() and proc.poll() is None:
                    time.sleep(0.02)
                mid_replay = False
            else:  # the rest at a random moment of the replay itself
                deadline = time.monotonic() + 120
                while "resuming:" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                # a random moment, early enough that every kill lands before the replay ends (this machine
                # replays seven weeks in about a second)
                time.sleep(loop_s * rng.uniform(0.1, 0.75) / KILLS)
                mid_replay = True
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += mid_replay
                delays.append(("replay" if mid_replay else "startup", round(time.monotonic(), 2)))
            proc.wait()
    assert kills >= KILLS, f"only {kills} mid-replay kills landed before the replay completed ({delays})"
    final = _finish(_args(db), tmp_path)
    assert final["resumed"], "the last run did not resume from a checkpoint"
    for key in DIGESTS:
        assert final[key] == reference[key], f"{key} differs after {kills} kills at {delays}"
    assert final["signals_in_db"] == final["signals"]
    assert reference["scored_signals"] > 0, "no model was ever in force: the filter was not exercised"
