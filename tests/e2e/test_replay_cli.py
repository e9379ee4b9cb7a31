"""`python -m bot replay` / `demo` as real processes: JSON summary, determinism, resume after SIGKILL."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import CANDLES
from tests.hostproc import desk_env, run

DATA = str(CANDLES / "binance_spot_2020-12_2021-07")
# the ML filter's own determinism is proven in test_replay_ml.py; here the replay machinery, faster without it
WINDOW = ["--from", "2021-03-01", "--to", "2021-04-15", "--no-ml"]
SUMMARY_KEYS = {"candles", "signals", "phantoms_closed", "phantom_win_rate", "elapsed_s", "candles_per_s",
                "phantom_digest"}


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _replay(tmp_path: Path, db: str, *extra: str) -> dict:
    done = run(["replay", "--data", DATA, *WINDOW, "--db", db, "--json", *extra], tmp_path, desk_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return _summary(done.stdout)


def test_replay_json_and_determinism(tmp_path: Path) -> None:
    first = _replay(tmp_path, f"sqlite:///{tmp_path}/a.db")
    assert first.keys() >= SUMMARY_KEYS
    assert first["candles"] > 50_000 and first["signals"] > 100 and first["signals_in_db"] == first["signals"]
    assert set(first["strategies"]) == {"trend_pullback", "mean_reversion", "scalp"}
    second = _replay(tmp_path, f"sqlite:///{tmp_path}/b.db")
    assert second["phantom_digest"] == first["phantom_digest"]
    again = _replay(tmp_path, f"sqlite:///{tmp_path}/a.db")  # already complete: nothing left to do
    assert again["resumed"] and again["phantom_digest"] == first["phantom_digest"]
    assert again["candles"] == first["candles"]


def test_different_replay_needs_fresh(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/x.db"
    _replay(tmp_path, db)
    done = run(["replay", "--data", DATA, "--from", "2021-03-02", "--to", "2021-03-20", "--no-ml", "--db", db,
                "--json"], tmp_path, desk_env(), timeout=300)
    assert done.returncode == 1 and "--fresh" in done.stderr
    fresh = _replay(tmp_path, db, "--fresh")
    assert not fresh["resumed"]


def test_bad_arguments(tmp_path: Path) -> None:
    done = run(["replay", "--data", str(tmp_path / "nowhere")], tmp_path, desk_env())
    assert done.returncode == 1 and "nowhere" in done.stderr
    done = run(["replay", "--data", DATA, "--intervals", "15"], tmp_path, desk_env())
    assert done.returncode == 1 and "--intervals" in done.stderr
    done = run(["replay", "--data", DATA, "--from", "yesterday"], tmp_path, desk_env())
    assert done.returncode == 2 and "yesterday" in done.stderr


def test_demo_prints_the_operator_report(tmp_path: Path) -> None:
    done = run(["demo", "--days", "10"], tmp_path, desk_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "phantomdesk replay" in out and "trend_pullback" in out and "taken vs not taken" in out
    assert (tmp_path / "var" / "phantomdesk.db").exists()
