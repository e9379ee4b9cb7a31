"""PostgreSQL stopped in the middle of a replay: the journal takes over, is replayed exactly once,
and the final ledger and phantoms equal an uninterrupted run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CANDLES
from tests.hostproc import desk_env
from tests.servers import Postgres, ServerUnavailable

DATA = str(CANDLES / "binance_spot_2020-12_2021-07")
WINDOW = ["--from", "2020-12-01", "--to", "2021-02-20", "--no-ml"]  # the ledger is the point here
OUTAGE_S = float(os.environ.get("PD_OUTAGE_S", "8"))  # `make test-long`: 30


def _args(db: str) -> list[str]:
    return [sys.executable, "-m", "bot", "replay", "--data", DATA, *WINDOW, "--db", db, "--json",
            "--flush-every", "500"]


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    try:
        # durable: an "immediate" stop is a crash and must not lose acknowledged commits (its own temp
        # dir: pytest's tmp_path is not reachable by the postgres user)
        pg = Postgres(durable=True).start()
    except ServerUnavailable as exc:
        from tests.conftest import _unavailable

        _unavailable("PostgreSQL", str(exc))
    yield pg
    pg.destroy()


def test_postgres_outage_mid_replay(tmp_path: Path, own_postgres: Postgres) -> None:
    reference = subprocess.run(_args(f"sqlite:///{tmp_path}/ref.db"), cwd=tmp_path, env=desk_env(),
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]
    want = json.loads(reference.stdout.strip().splitlines()[-1])

    env = desk_env(SECRET_KEY="k" * 40)
    err_path = tmp_path / "replay.err"
    with err_path.open("w") as err_file:
        proc = subprocess.Popen(_args(own_postgres.url), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=err_file, text=True)
        deadline = time.monotonic() + 120
        while "replay " not in err_path.read_text() or "resuming" not in err_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(0.7)  # mid-replay, while the bot still trades (its drawdown guard halts it later)
        assert proc.poll() is None, "the replay ended before the outage"
        own_postgres.stop("immediate")  # a crash of the server
        time.sleep(OUTAGE_S)
        own_postgres.start()
        try:
            out, _ = proc.communicate(timeout=300)
        finally:
            proc.kill()
    err = err_path.read_text()
    assert proc.returncode == 0, err[-3000:]
    got = json.loads(out.strip().splitlines()[-1])
    assert "goes to the journal" in err and "journal flushed" in err  # the outage really happened
    assert got["ledger_digest"] == want["ledger_digest"]
    assert got["phantom_digest"] == want["phantom_digest"]
    assert got["trades_closed"] == want["trades_closed"] > 0
    assert got["signals_in_db"] == got["signals"]
    journals = list((tmp_path / "var" / "journal").glob("ledger-*.jsonl"))
    assert not [j for j in journals if j.stat().st_size > 0]  # everything replayed, nothing left
