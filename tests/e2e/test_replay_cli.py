"""`python -m bot replay` / `demo` as real processes: JSON summary, determinism, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
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
    return _replay_args(tmp_path, db, [*WINDOW, *extra])


def _replay_args(tmp_path: Path, db: str, args: list[str]) -> dict:
    done = run(["replay", "--data", DATA, *args, "--db", db, "--json"], tmp_path, desk_env(), timeout=300)
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
    assert done.returncode == 2 and "--intervals" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = run(["replay", "--data", DATA, "--from", "yesterday"], tmp_path, desk_env())
    assert done.returncode == 2 and "yesterday" in done.stderr


def test_demo_prints_the_operator_report(tmp_path: Path) -> None:
    done = run(["demo", "--days", "10"], tmp_path, desk_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "phantomdesk replay" in out and "trend_pullback" in out and "taken vs not taken" in out
    assert (tmp_path / "var" / "phantomdesk.db").exists()


def _checkpoint_halts(db: Path) -> list[dict]:
    try:
        with sqlite3.connect(db, timeout=1) as con:
            row = con.execute("SELECT counters FROM bot_states WHERE bot_id='replay' AND kind='checkpoint'").fetchone()
    except sqlite3.OperationalError:  # not created yet, or busy
        return []
    return json.loads(row[0])["extra"].get("halts", []) if row else []


def test_on_halt_resume_is_deterministic_and_resumes_its_halts(tmp_path: Path) -> None:
    """--on-halt resume: the same command gives the same halts, resumes and digests; killed once its
    checkpoint holds a halt, run again, it reports every halt and ends as one never interrupted."""
    window = ["--to", "2021-02-10", "--no-ml", "--on-halt", "resume", "--resume-after", "12"]
    whole = _replay_args(tmp_path, f"sqlite:///{tmp_path}/whole.db", window)
    assert len(whole["halts"]) >= 2 and all(h["resumed_at"] for h in whole["halts"])
    first = datetime.fromisoformat(whole["halts"][0]["at"])
    assert datetime.fromisoformat(whole["halts"][0]["resumed_at"]) - first >= timedelta(hours=12)

    db = tmp_path / "kill.db"
    args = [sys.executable, "-m", "bot", "replay", "--data", DATA, *window, "--db", f"sqlite:///{db}", "--json",
            "--flush-every", "500"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=desk_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _checkpoint_halts(db) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the replay finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    saved = _checkpoint_halts(db)
    assert saved and saved[-1]["at"] < whole["halts"][-1]["at"]  # killed part-way, a halt in its checkpoint
    done = subprocess.run(args, cwd=tmp_path, env=desk_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = _summary(done.stdout)
    assert resumed["resumed"]
    same = ("halts", "halted_share", "ledger_digest", "phantom_digest", "net_pnl", "trades_closed")
    assert {k: resumed[k] for k in same} == {k: whole[k] for k in same}


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    """stderr a (pseudo) terminal: a progress bar with its ETA; with --json, or piped, none."""
    args = [sys.executable, "-m", "bot", "replay", "--data", DATA, "--from", "2021-03-01", "--to", "2021-03-08",
            "--no-ml"]

    def stderr_on_pty(*extra: str) -> str:
        master, slave = pty.openpty()
        proc = subprocess.Popen([*args, "--db", f"sqlite:///{tmp_path}/{len(extra)}.db", *extra], cwd=tmp_path,
                                env=desk_env(COLUMNS="120"), stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        chunks: list[bytes] = []

        def drain() -> None:  # a pty's buffer is small: read while the replay writes
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    return
                if not data:
                    return
                chunks.append(data)

        reader = threading.Thread(target=drain)
        reader.start()
        proc.communicate(timeout=300)
        reader.join(10)
        os.close(master)
        assert proc.returncode == 0
        return b"".join(chunks).decode(errors="replace")

    shown = stderr_on_pty()
    assert "ETA" in shown and "━" in shown and "replay 2021-03" in re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert "ETA" not in stderr_on_pty("--json")
