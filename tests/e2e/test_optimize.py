"""`python -m bot optimize` as real processes on the shared real candles: a seeded study is reproducible; a
study killed (Ctrl-C, then SIGKILL) continues where it stopped with every finished trial kept; two processes
share one study on PostgreSQL; a strategy that trades only out of sample fails every trial while its
out-of-sample figures are there; a trial's window is exactly what `replay` replays; `optimize apply`
writes a trial into a bot (validated, audited) and refuses one that does not exist."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CANDLES
from tests.hostproc import ROOT, desk_env, run

DATA = CANDLES / "binance_spot_2020-12_2021-07"
# two pairs, eight days, two folds: a trial replays about 3,000 candles (~0.1 s)
ARGS = ["optimize", "--data", str(DATA), "--strategy", "trend_pullback", "--symbols", "BTCUSDT,ETHUSDT",
        "--from", "2021-03-01", "--to", "2021-03-09", "--windows", "2", "--min-trades", "3", "--json"]
Trials = dict[int, tuple[str, float | None, dict[str, Any]]]


def _doc(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _optimize(cwd: Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    return _doc(run([*ARGS, *extra], cwd, env, timeout=180))


def _trials(journal: Path) -> Trials:
    """number -> (state, value, params) as the study's journal holds them (read beside its writers)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal))))
    study = optuna.load_study(study_name=journal.stem, storage=storage)
    return {t.number: (t.state.name, t.value, t.params) for t in study.get_trials(deepcopy=False)}


def _finished(trials: Trials) -> Trials:
    return {n: t for n, t in trials.items() if t[0] in ("COMPLETE", "PRUNED")}


def _wait(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("seeded")
    return root, _optimize(root, desk_env(DATA_DIR=str(root / "var")), "--trials", "8", "--seed", "11",
                           "--out", str(root / "out"))


def test_the_same_seed_gives_the_same_study(seeded: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, first = seeded
    second = _optimize(tmp_path, desk_env(DATA_DIR=str(tmp_path / "var")), "--trials", "8", "--seed", "11")
    assert first["best"] is not None and first["trials"]["finished"] == 8 and first["run"]["trials"] == list(range(8))
    assert second["study"] == first["study"]  # the default name: strategy, version, data, windows, objective
    assert second["best"]["params"] == first["best"]["params"] and second["best"]["value"] == first["best"]["value"]
    assert [(r["trial"], r["value"], r["params"], r["out_of_sample"]) for r in second["top"]] == \
        [(r["trial"], r["value"], r["params"], r["out_of_sample"]) for r in first["top"]]
    out = root / "out"
    assert (out / "optimize.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"| {first['best']['trial']} |" in (out / "results.md").read_text()
    assert len((out / "trials.csv").read_text().strip().splitlines()) == 1 + 8


def test_a_killed_study_continues_where_it_stopped(tmp_path: Path) -> None:
    env = desk_env(DATA_DIR=str(tmp_path / "var"))
    command = [sys.executable, "-m", "bot", *ARGS, "--trials", "24"]
    folder = tmp_path / "var" / "optimize"

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    def journal() -> Path | None:
        return next(iter(folder.glob("*.journal")), None) if folder.is_dir() else None

    def finished() -> int:
        path = journal()
        return len(_finished(_trials(path))) if path is not None else 0

    proc = start()  # Ctrl-C once trials are in the storage: it says so, and exits 130
    _wait(lambda: finished() >= 3, "3 finished trials")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted: study" in err and "the same command continues it" in err
    path = journal()
    assert path is not None
    interrupted = _trials(path)

    proc = start()  # SIGKILL of everything: no chance to say anything
    _wait(lambda: finished() >= len(_finished(interrupted)) + 3, "3 more finished trials")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    killed = _trials(path)
    assert _finished(killed).items() >= _finished(interrupted).items()

    doc = _optimize(tmp_path, env, "--trials", "24")  # the same command
    after = _trials(path)
    assert doc["study"] == path.stem and doc["trials"]["finished"] == len(_finished(after)) == 24
    assert _finished(after).items() >= _finished(killed).items()  # no finished trial lost or changed
    assert sorted(after) == list(range(len(after)))  # none twice
    assert not [n for n, t in after.items() if t[0] == "RUNNING"]  # the killed run's trial is failed, not running
    assert len(doc["run"]["trials"]) == 24 - len(_finished(killed))


def test_two_processes_share_one_study_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")  # Optuna's RDB storage is synchronous: asyncpg cannot serve it
    path = f"{ROOT}{os.pathsep}{Path(psycopg.__file__).parent.parent}"  # where this process found psycopg
    command = [sys.executable, "-m", "bot", *ARGS, "--trials", "30", "--study", "shared", "--storage", pg_url]
    procs = []
    for i in range(2):  # as if on two machines: nothing shared but the database
        (tmp_path / f"m{i}").mkdir()
        procs.append(subprocess.Popen(command, cwd=tmp_path / f"m{i}", stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      env=desk_env(DATA_DIR=str(tmp_path / f"m{i}" / "var"), PYTHONPATH=path)))
    docs = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        docs.append(_doc(subprocess.CompletedProcess(proc.args, proc.returncode, out, err)))
    ran = [set(d["run"]["trials"]) for d in docs]
    assert ran[0] and ran[1] and not ran[0] & ran[1]  # both worked, no trial twice

    import optuna

    from bot.optimize import location, quiet_optuna

    quiet_optuna()
    study = optuna.load_study(study_name="shared", storage=location(pg_url, tmp_path, "shared").open())
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == sorted(ran[0] | ran[1])  # none lost
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials) and 30 <= len(trials) <= 31
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert "schema optuna" in docs[0]["storage"] and "postgres@" not in json.dumps(docs)


ONLY_OUT = '''
from pydantic import Field
from core.strategies import Proposal, StrategyParams

OUT = {out}  # the out-of-sample windows: (start, end] close times in ms


class OnlyOutParams(StrategyParams):
    # bounds that keep every sampled trade worth taking after fees (min_reward_r)
    stop_atr: float = Field(1.5, ge=1.0, le=2.0, description="stop, in ATR")
    target_atr: float = Field(3.0, ge=2.0, le=4.0, description="target, in ATR")


class OnlyOut:
    """Trades only inside the out-of-sample windows: in sample it never has a trade."""

    name = "only_out"
    role = "fast"
    Params = OnlyOutParams

    def __init__(self, params):
        self.params = params

    def propose(self, s, ctx):
        c, atr = s.last_candle, s.ind.atr
        close_ms = c.open_ms + s.step_ms
        if not atr > 0 or not any(a < close_ms <= b for a, b in OUT):
            return None
        return Proposal("long", c.close, c.close - self.params.stop_atr * atr, c.close + self.params.target_atr * atr)

    def allowed(self, regime, side):
        return True
'''


def test_a_strategy_trading_only_out_of_sample_fails_every_trial(tmp_path: Path) -> None:
    from core.market.candle import dt_to_ms
    from core.optimize.windows import walk_forward

    start, end = dt_to_ms(datetime(2021, 3, 1, tzinfo=UTC)), dt_to_ms(datetime(2021, 3, 9, tzinfo=UTC))
    walk = walk_forward(start, end, 2, 0.25, "rolling", 900_000)
    folder = tmp_path / "strategies"
    folder.mkdir()
    out = [(w.start_ms, w.end_ms) for w in walk.out_of_sample]
    (folder / "only_out.py").write_text(ONLY_OUT.format(out=out))
    args = [a if a != "trend_pullback" else "only_out" for a in ARGS]
    doc = _doc(run([*args, "--trials", "4", "--min-trades", "1"], tmp_path,
                   desk_env(DATA_DIR=str(tmp_path / "var"), STRATEGIES_DIR=str(folder)), timeout=180))
    assert [(w["start"], w["end"]) for w in doc["windows"] if w["window"].startswith("OOS")] == \
        [(datetime.fromtimestamp(a / 1000, UTC).isoformat(), datetime.fromtimestamp(b / 1000, UTC).isoformat())
         for a, b in out]
    assert doc["trials"]["scored"] == 0 and doc["trials"]["failed"] == 4 and doc["best"] is None
    assert len(doc["top"]) == 4
    for row in doc["top"]:
        assert row["value"] is None and row["in_sample"]["trades"] == 0 and "< --min-trades 1" in row["failed"]
        assert row["out_of_sample"]["trades"] > 0


def test_a_trial_window_is_what_replay_replays(tmp_path: Path) -> None:
    from core.config import BotConfig
    from core.ledger import ledger_digest
    from core.market.candle import dt_to_ms
    from core.optimize.evaluate import Market, WindowReplayer
    from core.optimize.windows import Window
    from storage.candle_files import read_candle_dir
    from storage.funding_files import read_funding_dir

    done = run(["replay", "--data", str(DATA), "--symbols", "BTCUSDT,ETHUSDT", "--from", "2021-03-02", "--to",
                "2021-03-06", "--no-ml", "--bot", "optimize", "--db", f"sqlite:///{tmp_path}/r.db", "--json"],
               tmp_path, desk_env(DATA_DIR=str(tmp_path / "var")), timeout=180)
    replayed = _doc(done)
    symbols = ["BTCUSDT", "ETHUSDT"]
    market = Market(tuple(read_candle_dir(DATA, symbols, ["15", "5"])), read_funding_dir(DATA, symbols), "15", "5")
    window = Window(1, "in", dt_to_ms(datetime(2021, 3, 2, tzinfo=UTC)), dt_to_ms(datetime(2021, 3, 6, tzinfo=UTC)),
                    None)
    trial = WindowReplayer(market).run(BotConfig(id="optimize", symbols=symbols), window)
    assert replayed["trades_closed"] == len(trial.trades) > 0
    assert ledger_digest(trial.trades) == replayed["ledger_digest"]


def _sql(db: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def test_apply_writes_a_trial_into_a_bot_and_refuses_one_that_does_not_exist(
        seeded: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, doc = seeded
    db = tmp_path / "desk.db"
    env = desk_env(DATA_DIR=str(root / "var"), DATABASE_URL=f"sqlite:///{db}")
    assert run(["migrate"], tmp_path, env).returncode == 0
    (tmp_path / "bot.yaml").write_text("id: tuned\nsymbols: [BTCUSDT, ETHUSDT]\nstrategies:\n"
                                       "  trend_pullback: {reward_risk: 2.55}\n  scalp: {}\n")
    assert run(["bots", "add", str(tmp_path / "bot.yaml")], tmp_path, env).returncode == 0
    study, best = doc["study"], doc["best"]

    def apply(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", "optimize", "apply", study, "--bot", "tuned", *extra],
                              cwd=tmp_path, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=120)

    missing = apply("--trial", "999", "--yes")
    assert missing.returncode == 1 and "has no trial 999" in missing.stderr
    unasked = apply("--trial", str(best["trial"]))  # no terminal to confirm on, no --yes
    assert unasked.returncode == 1 and "--yes" in unasked.stderr and "reward_risk" in unasked.stdout
    assert _sql(db, "SELECT action FROM audit_log ORDER BY id") == [("bot_add",)]  # nothing written so far

    done = apply("--trial", str(best["trial"]), "--yes")
    assert done.returncode == 0, done.stderr
    assert f"strategies.trend_pullback.reward_risk: 2.55 -> {best['params']['reward_risk']:g}" in done.stdout
    assert "this bot also runs scalp" in done.stdout
    shown = json.loads(run(["bots", "show", "tuned", "--json"], tmp_path, env).stdout)
    assert {k: shown["strategies"]["trend_pullback"][k] for k in best["params"]} == best["params"]
    assert shown["strategies"]["scalp"]["reward_risk"] == 1.5  # the other strategy untouched
    (details,) = _sql(db, "SELECT details FROM audit_log WHERE action = 'optimize_apply'")
    audited = json.loads(details[0])
    assert (audited["study"], audited["trial"], audited["value"]) == (study, best["trial"], best["value"])
    assert audited["changes"]["strategies.trend_pullback.reward_risk"][1] == best["params"]["reward_risk"]
