"""`python -m bot bots ...` as real subprocesses: bot configurations from YAML/JSON files, validated before
anything is written; pause/resume stored in the database; remove deletes a bot's rows by cascade."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.hostproc import ROOT, desk_env, run

EXAMPLE = ROOT / "bots.example.yaml"
GOOD = {"id": "good", "symbols": ["BTCUSDT"]}


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `python -m bot migrate` per module (a CLI start costs seconds); each test gets a copy."""
    root = tmp_path_factory.mktemp("migrated")
    done = run(["migrate"], root, desk_env())
    assert done.returncode == 0, done.stderr
    return root / "var"


@pytest.fixture
def desk(tmp_path: Path, migrated: Path) -> Path:
    """A working directory with a migrated embedded database (var/phantomdesk.db)."""
    shutil.copytree(migrated, tmp_path / "var")
    return tmp_path


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(["bots", *args], cwd, desk_env(**env))


def sql(cwd: Path, query: str, *params: Any) -> list[tuple]:
    with sqlite3.connect(cwd / "var" / "phantomdesk.db") as db:
        return db.execute(query, params).fetchall()


def counts(cwd: Path) -> tuple[int, int]:
    return sql(cwd, "SELECT count(*) FROM bots")[0][0], sql(cwd, "SELECT count(*) FROM audit_log")[0][0]


def write(folder: Path, name: str, doc: Any) -> Path:
    path = folder / name
    path.write_text(json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc, sort_keys=False))
    return path


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()


def test_example_add_list_pause_edit_resume_remove(desk: Path) -> None:
    done = cli(desk, "add", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert "added bot 'majors'" in done.stdout and "added bot 'alts-scalp'" in done.stdout

    listed = cli(desk, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert lines[0].split() == ["ID", "NAME", "MODE", "STATUS", "SYMBOLS", "STRATEGIES", "RISK"]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert set(by_id) == {"majors", "alts-scalp"}
    assert "BTCUSDT,ETHUSDT" in by_id["majors"] and "trend_pullback,mean_reversion" in by_id["majors"]
    assert by_id["majors"].rstrip().endswith("1%") and by_id["alts-scalp"].rstrip().endswith("25 USDT")
    as_json = {b["id"]: b for b in json.loads(cli(desk, "list", "--json").stdout)}
    alts = as_json["alts-scalp"]
    assert alts["symbols"] == ["SOLUSDT", "XRPUSDT"] and alts["strategies"] == ["scalp"]
    assert alts["intervals"] == ["60", "15"] and alts["ml_threshold"] == 0.15 and alts["risk_usd"] == 25
    assert as_json["majors"]["risk_pct"] == 1 and as_json["majors"]["status"] == "running"

    # pause: stored with its reason, audited; read back from the database a new process would load
    done = cli(desk, "pause", "majors", "funding", "week")
    assert done.returncode == 0, done.stderr
    assert sql(desk, "SELECT status, status_reason FROM bots WHERE id = 'majors'") == [("paused", "funding week")]

    # edit: a new risk, and the paused status is kept
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["bots"][0]["risk_pct"] = 0.5
    done = cli(desk, "edit", str(write(desk, "edited.yaml", doc)))
    assert done.returncode == 0, done.stderr
    assert "updated bot 'majors' (status paused kept): risk_pct: 1 -> 0.5" in done.stdout
    assert "bot 'alts-scalp': no changes" in done.stdout
    assert sql(desk, "SELECT status, status_reason, risk_pct FROM bots WHERE id = 'majors'") == [
        ("paused", "funding week", 0.5)]
    shown = yaml.safe_load(cli(desk, "show", "majors").stdout)
    assert shown["risk_pct"] == 0.5 and shown["symbols"] == ["BTCUSDT", "ETHUSDT"]

    done = cli(desk, "resume", "majors")
    assert done.returncode == 0, done.stderr
    assert sql(desk, "SELECT status, status_reason FROM bots WHERE id = 'majors'") == [("running", None)]
    assert sql(desk, "SELECT actor, bot_id, action FROM audit_log ORDER BY id") == [
        ("console", "majors", "bot_add"), ("console", "alts-scalp", "bot_add"), ("console", "majors", "paused"),
        ("console", "majors", "bot_edit"), ("console", "majors", "resume")]

    # remove: refused while a trade is open, then (--yes) the bot and its rows go, by cascade
    _open_trade(desk, "alts-scalp")
    before = counts(desk)
    done = cli(desk, "remove", "alts-scalp")
    assert done.returncode == 1 and "1 open trade(s) (SOLUSDT)" in done.stderr and "--yes" in done.stderr
    assert counts(desk) == before and sql(desk, "SELECT count(*) FROM trades") == [(1,)]
    done = cli(desk, "remove", "alts-scalp", "--yes")
    assert done.returncode == 0, done.stderr
    assert "removed bot 'alts-scalp' and its rows: 1 signals, 1 trades, 1 orders" in done.stdout
    assert sql(desk, "SELECT id FROM bots") == [("majors",)]
    for table in ("signals", "trades", "orders"):
        assert sql(desk, f"SELECT count(*) FROM {table}") == [(0,)]
    action, details = sql(desk, "SELECT action, details FROM audit_log WHERE bot_id = 'alts-scalp' ORDER BY id DESC")[0]
    assert action == "bot_remove" and json.loads(details)["rows"] == {"signals": 1, "trades": 1, "orders": 1}
    # a bot without open trades goes without --yes
    assert cli(desk, "remove", "majors").returncode == 0
    assert "no bots" in cli(desk, "list").stdout


def _open_trade(cwd: Path, bot_id: str) -> None:
    t = "2026-01-01 00:00:00.000000"
    with sqlite3.connect(cwd / "var" / "phantomdesk.db") as db:
        db.execute("INSERT INTO signals (id, bot_id, symbol, interval, strategy, side, time, entry, stop_loss, "
                   "take_profit, features, action, created_at) VALUES ('s1', ?, 'SOLUSDT', '15', 'scalp', 'long', ?, "
                   "100, 95, 110, '{}', 'EXECUTED', ?)", (bot_id, t, t))
        db.execute("INSERT INTO trades (id, bot_id, signal_id, symbol, side, status, mode, qty, leverage, entry_price, "
                   "entry_time, fees, created_at, updated_at) VALUES ('t1', ?, 's1', 'SOLUSDT', 'long', 'open', "
                   "'paper', 1, 1, 100, ?, 0, ?, ?)", (bot_id, t, t, t))
        db.execute("INSERT INTO orders (order_link_id, bot_id, trade_id, symbol, side, order_type, qty, status, "
                   "reduce_only, created_at) VALUES ('o1', ?, 't1', 'SOLUSDT', 'Buy', 'Market', 1, 'Filled', 0, ?)",
                   (bot_id, t))


BAD_BOTS = {
    "missing-field": ({"id": "main", "risk_pct": 1}, "bot 'main': symbols: required field is missing"),
    "missing-id": ({"symbols": ["BTCUSDT"]}, "bot #2: id: required field is missing"),
    "negative-risk": ({"id": "main", "symbols": ["BTCUSDT"], "risk_pct": -1},
                      "bot 'main': risk_pct: Input should be greater than 0"),
    "unknown-strategy": ({"id": "main", "symbols": ["BTCUSDT"], "strategies": {"foo": {}, "scalp": {}}},
                         "bot 'main': strategies.foo: unknown strategy 'foo'"),
    "bad-strategy-param": ({"id": "main", "symbols": ["BTCUSDT"], "strategies": {"scalp": {"reward_risk": 0}}},
                           "bot 'main': strategies.scalp.reward_risk: Input should be greater than 0.2"),
    "unknown-key": ({"id": "main", "symbols": ["BTCUSDT"], "colour": "red"},
                    "bot 'main': colour: unknown field"),
}


@pytest.mark.parametrize(("case", "suffix"), [*((c, ".yaml") for c in sorted(BAD_BOTS)),
                                              ("negative-risk", ".json"), ("unknown-strategy", ".json")])
def test_bad_bot_is_rejected_with_its_field_named_and_nothing_written(desk: Path, case: str, suffix: str) -> None:
    bad, message = BAD_BOTS[case]
    path = write(desk, f"bots{suffix}", {"bots": [GOOD, bad]})  # the good bot first: it is not written either
    before = counts(desk)
    done = cli(desk, "add", str(path))
    assert done.returncode == 1
    lines = error_lines(done)
    assert any(line.startswith(f"error: {path}: {message}") for line in lines), lines
    assert lines[-1] == f"error: {path}: nothing was written"
    assert counts(desk) == before == (0, 0)


def test_every_problem_of_every_bot_is_listed(desk: Path) -> None:
    path = write(desk, "bots.yaml", [{"id": "a", "risk_pct": -1},
                                     {"id": "b", "symbols": ["BTCUSDT"], "strategies": {"foo": None}, "x": 1}])
    done = cli(desk, "add", str(path))
    assert done.returncode == 1
    assert error_lines(done) == [
        f"error: {path}: bot 'a': symbols: required field is missing",
        f"error: {path}: bot 'a': risk_pct: Input should be greater than 0",
        f"error: {path}: bot 'b': strategies.foo: unknown strategy 'foo' (known: trend_pullback, mean_reversion, "
        "scalp)",
        f"error: {path}: bot 'b': x: unknown field (not a bot setting)",
        f"error: {path}: nothing was written"]
    assert counts(desk) == (0, 0)


@pytest.mark.parametrize(("name", "text", "where"), [
    ("bots.yaml", "bots:\n  - id: main\n    symbols: [BTCUSDT\n", "bots.yaml:4:1: YAML syntax error"),
    ("bots.yaml", "id: main\nsymbols: [BTCUSDT]\nid: other\n", "bots.yaml:3:1: YAML syntax error: duplicate key 'id'"),
    ("bots.json", '{"id": "main", "symbols": ["BTCUSDT"],}', "bots.json:1:39: JSON syntax error"),
], ids=["yaml-syntax", "yaml-duplicate-key", "json-syntax"])
def test_syntax_errors_name_line_and_column(desk: Path, name: str, text: str, where: str) -> None:
    path = desk / name
    path.write_text(text)
    done = cli(desk, "add", str(path))
    assert done.returncode == 1
    lines = error_lines(done)
    assert len(lines) == 1 and lines[0].startswith(f"error: {desk}/{where}"), lines
    assert counts(desk) == (0, 0)


def test_edit_is_validated_too_and_needs_existing_bots(desk: Path) -> None:
    assert cli(desk, "add", str(EXAMPLE)).returncode == 0
    assert cli(desk, "pause", "majors").returncode == 0
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["bots"][0]["risk_pct"] = -0.5
    before = sql(desk, "SELECT * FROM bots ORDER BY id")
    done = cli(desk, "edit", str(write(desk, "bad.yaml", doc)))
    assert done.returncode == 1 and "bot 'majors': risk_pct: Input should be greater than 0" in done.stderr
    again = cli(desk, "add", str(EXAMPLE))
    assert again.returncode == 1 and "bots 'alts-scalp', 'majors' already exist" in again.stderr
    unknown = cli(desk, "edit", str(write(desk, "new.yaml", GOOD)))
    assert unknown.returncode == 1 and "no bot 'good'" in unknown.stderr
    assert sql(desk, "SELECT * FROM bots ORDER BY id") == before


def test_halted_bot_needs_yes_to_resume_and_cannot_be_paused(desk: Path) -> None:
    assert cli(desk, "add", str(write(desk, "one.yml", GOOD))).returncode == 0
    with sqlite3.connect(desk / "var" / "phantomdesk.db") as db:
        db.execute("UPDATE bots SET status = 'halted', status_reason = 'drawdown 21%' WHERE id = 'good'")
    paused = cli(desk, "pause", "good")
    assert paused.returncode == 1 and "is halted (drawdown 21%)" in paused.stderr
    refused = cli(desk, "resume", "good")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert sql(desk, "SELECT status FROM bots") == [("halted",)]
    assert cli(desk, "resume", "good", "--yes").returncode == 0
    assert sql(desk, "SELECT status, status_reason FROM bots") == [("running", None)]


def test_usage_errors_and_an_unmigrated_database(tmp_path: Path) -> None:
    other = write(tmp_path, "bots.txt", GOOD)
    assert cli(tmp_path, "add", str(other)).returncode == 2
    assert cli(tmp_path, "frobnicate").returncode == 2
    not_migrated = cli(tmp_path, "list")
    assert not_migrated.returncode == 3 and "python -m bot migrate" in not_migrated.stderr


async def _pg(url: str, query: str) -> list[tuple]:
    from sqlalchemy import text

    from storage.db import create_engine

    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(query))).all()]
    finally:
        await engine.dispose()


def test_bots_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    env = {"DATABASE_URL": pg_url, "SECRET_KEY": "k" * 40}
    assert run(["migrate"], tmp_path, desk_env(**env)).returncode == 0
    assert cli(tmp_path, "add", str(EXAMPLE), **env).returncode == 0
    assert cli(tmp_path, "pause", "alts-scalp", "too", "volatile", **env).returncode == 0
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["bots"][1]["risk_usd"] = 40
    done = cli(tmp_path, "edit", str(write(tmp_path, "edit.json", doc)), **env)
    assert done.returncode == 0, done.stderr
    rows = asyncio.run(_pg(pg_url, "SELECT id, status, status_reason, risk_usd FROM bots ORDER BY id"))
    assert [(r[0], r[1], r[2], float(r[3]) if r[3] is not None else None) for r in rows] == [
        ("alts-scalp", "paused", "too volatile", 40.0), ("majors", "running", None, None)]
    bad = cli(tmp_path, "add", str(write(tmp_path, "bad.yaml", {"id": "x", "symbols": ["BTCUSDT"], "risk_pct": -1})),
              **env)
    assert bad.returncode == 1 and "risk_pct: Input should be greater than 0" in bad.stderr
    assert cli(tmp_path, "resume", "alts-scalp", **env).returncode == 0
    assert cli(tmp_path, "remove", "majors", **env).returncode == 0
    assert asyncio.run(_pg(pg_url, "SELECT id, status FROM bots")) == [("alts-scalp", "running")]
    assert asyncio.run(_pg(pg_url, "SELECT count(*) FROM audit_log WHERE actor = 'console'")) == [(6,)]


def test_a_bot_whose_symbols_are_a_rule(desk: Path) -> None:
    """`symbols:` as a rule in a file: stored as the bot's universe (no list), shown as the rule; a bad rule names
    its field and writes nothing."""
    path = write(desk, "uni.yaml", {"id": "forager", "symbols": {"top": 20, "exclude": ["dogeusdt"]}})
    assert cli(desk, "add", str(path)).returncode == 0
    [(symbols, config)] = sql(desk, "SELECT symbols, config FROM bots WHERE id = 'forager'")
    assert json.loads(symbols) == [] and json.loads(config)["universe"]["exclude"] == ["DOGEUSDT"]
    listed = cli(desk, "list").stdout
    assert "top 20 by turnover minus DOGEUSDT" in listed
    bad = write(desk, "bad.yaml", {"id": "bad", "universe": {"top": 0}})
    done = cli(desk, "add", str(bad))
    assert done.returncode == 1 and any("universe.top" in line for line in error_lines(done))
