"""Your own strategy, the way a user runs it, as real processes and with no edit to the project: written
by `strategies new` outside the repository and changed, checked, replayed, configured on a bot and traded
by the paper desk; refused when broken (one log line, the command goes on); listed from an entry point."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CANDLES
from tests.hostproc import ROOT, DeskProcess, desk_env, run

DATA = CANDLES / "binance_spot_2020-12_2021-07"
WINDOW = ["--from", "2021-03-01", "--to", "2021-03-15", "--no-ml"]

LEAKY = '''
from pydantic import Field
from core.strategies import Proposal, StrategyParams

_SEEN: dict[str, list[float]] = {}  # module level: it outlives the run that filled it (the bug)


class LeakyParams(StrategyParams):
    stop_atr: float = Field(1.5, gt=0, le=10, description="stop distance, in ATR")


class Leaky:
    """Buys a close at the highest close it has seen: after one run, that includes the future."""

    name = "leaky"
    role = "slow"
    Params = LeakyParams

    def __init__(self, params):
        self.params = params

    def propose(self, s, ctx):
        c, atr = s.last_candle, s.ind.atr
        closes = _SEEN.setdefault(s.symbol, [])
        closes.append(c.close)
        if len(closes) < 50 or not atr > 0 or c.close < max(closes):
            return None
        return Proposal("long", c.close, c.close - self.params.stop_atr * atr, c.close + 3 * atr)

    def allowed(self, regime, side):
        return True
'''


def sql(db: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def version_of(path: Path) -> str:
    return hashlib.sha256(path.read_text(encoding="utf-8").encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def mine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template, written outside the repository, then changed the way its owner would."""
    root = tmp_path_factory.mktemp("user")
    folder = root / "my strategies"
    done = run(["strategies", "new", "my_breakout", "--dir", str(folder)], root, desk_env())
    assert done.returncode == 0, done.stderr
    path = folder / "my_breakout.py"
    assert f"wrote {path}" in done.stdout and not str(path).startswith(str(ROOT))
    text = path.read_text()
    assert "Field(20, ge=5, le=500" in text
    path.write_text(text.replace("Field(20, ge=5, le=500", "Field(30, ge=5, le=500"))
    again = run(["strategies", "new", "my_breakout", "--dir", str(folder)], root, desk_env())
    assert again.returncode == 1 and "exists already" in again.stderr
    return path


def _replay(cwd: Path, db: Path, folder: Path) -> dict[str, Any]:
    done = run(["replay", "--data", str(DATA), *WINDOW, "--strategies", "my_breakout", "--db", f"sqlite:///{db}",
                "--json"], cwd, desk_env(STRATEGIES_DIR=str(folder)), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_check_passes_the_template_and_flags_look_ahead(tmp_path: Path, mine: Path) -> None:
    done = run(["strategies", "check", str(mine), "--days", "3"], tmp_path, desk_env(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "look-ahead: none" in done.stdout and "signals: 0 " not in done.stdout

    leaky = tmp_path / "leaky.py"
    leaky.write_text(LEAKY)
    done = run(["strategies", "check", str(leaky), "--days", "3"], tmp_path, desk_env(), timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "LOOK-AHEAD" in done.stdout and "cut at that candle no signal" in done.stdout


def test_it_replays_with_its_name_and_version_in_every_signal(tmp_path: Path, mine: Path) -> None:
    first = _replay(tmp_path, tmp_path / "a.db", mine.parent)
    assert first["trades_closed"] > 0 and set(first["strategies"]) == {"my_breakout"}
    version = version_of(mine)
    assert sql(tmp_path / "a.db", "SELECT DISTINCT strategy, strategy_version FROM signals") == \
        [("my_breakout", version)]
    trades = sql(tmp_path / "a.db", "SELECT t.strategy, s.strategy_version, count(*) FROM trades t "
                                    "JOIN signals s ON s.id = t.signal_id GROUP BY 1, 2")
    assert trades == [("my_breakout", version, first["trades_closed"])]

    same = _replay(tmp_path, tmp_path / "b.db", mine.parent)  # the same code: the same digests
    assert (same["phantom_digest"], same["ledger_digest"]) == (first["phantom_digest"], first["ledger_digest"])

    edited = tmp_path / "edited"  # a copy changed by a comment only: a new version, new digests
    edited.mkdir()
    (edited / mine.name).write_text(mine.read_text() + "\n# tuned on 2021-03\n")
    other = _replay(tmp_path, tmp_path / "c.db", edited)
    assert other["signals"] == first["signals"] and other["trades_closed"] == first["trades_closed"]
    assert other["phantom_digest"] != first["phantom_digest"] and other["ledger_digest"] != first["ledger_digest"]
    assert sql(tmp_path / "c.db", "SELECT DISTINCT strategy_version FROM signals") == \
        [(version_of(edited / mine.name),)]


def test_bots_add_names_a_bad_parameter_of_a_user_strategy(tmp_path: Path, mine: Path) -> None:
    env = desk_env(STRATEGIES_DIR=str(mine.parent))
    assert run(["migrate"], tmp_path, env).returncode == 0
    bad = tmp_path / "bots.yaml"
    bad.write_text(yaml.safe_dump({"id": "mine", "symbols": ["BTCUSDT"], "strategies": {"my_breakout": {
        "lookback": 501}}}))
    done = run(["bots", "add", str(bad)], tmp_path, env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"error: {bad}: bot 'mine': strategies.my_breakout.lookback: Input should be less than or equal to 500",
        f"error: {bad}: nothing was written"]
    assert sql(tmp_path / "var" / "phantomdesk.db", "SELECT count(*) FROM bots") == [(0,)]
    bad.write_text(yaml.safe_dump({"id": "mine", "symbols": ["BTCUSDT"], "strategies": {"my_breakout": {
        "lookback": 50}}}))
    done = run(["bots", "add", str(bad)], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert "strategies my_breakout" in done.stdout


def test_a_broken_file_is_one_log_line_and_the_rest_loads(tmp_path: Path, mine: Path) -> None:
    folder = tmp_path / "strategies"  # the default folder, in the working directory
    folder.mkdir()
    shutil.copy(mine, folder / mine.name)
    (folder / "broken.py").write_text("from core.strategies import Proposal\n\ndef propose(:\n")
    (folder / "_helpers.py").write_text("raise RuntimeError('a helper is not loaded on its own')\n")
    done = run(["strategies", "list", "--json"], tmp_path, desk_env())
    assert done.returncode == 0, done.stderr
    refused = [line for line in done.stderr.splitlines() if "strategy refused" in line]
    assert len(refused) == 1 and f"{folder / 'broken.py'}: cannot import it: SyntaxError" in refused[0], done.stderr
    listed = {s["name"]: s for s in json.loads(done.stdout)}
    assert list(listed) == ["trend_pullback", "mean_reversion", "scalp", "my_breakout"]
    assert listed["my_breakout"]["source"] == str((folder / mine.name).resolve())
    assert listed["my_breakout"]["version"] == version_of(mine)
    lookback = next(p for p in listed["my_breakout"]["params"] if p["name"] == "lookback")
    assert (lookback["default"], lookback["bounds"]) == (30, ">=5, <=500") and lookback["description"]


def test_a_missing_strategies_dir_is_a_settings_error(tmp_path: Path) -> None:
    done = run(["strategies", "list"], tmp_path, desk_env(STRATEGIES_DIR=str(tmp_path / "nowhere")))
    assert done.returncode == 2 and f"STRATEGIES_DIR: no such folder: {tmp_path / 'nowhere'}" in done.stderr


def test_an_entry_point_strategy_is_listed(tmp_path: Path, mine: Path) -> None:
    """A package installed the usual way: its dist-info declares the entry points, found on sys.path."""
    site = tmp_path / "site"
    (site / "desk_extras-1.0.dist-info").mkdir(parents=True)
    (site / "desk_extras.py").write_text(mine.read_text().replace('name = "my_breakout"', 'name = "ep_breakout"'))
    (site / "desk_extras-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: desk-extras\n"
                                                                 "Version: 1.0\n")
    (site / "desk_extras-1.0.dist-info" / "entry_points.txt").write_text(
        "[phantomdesk.strategies]\nep_breakout = desk_extras:MyBreakout\nep_missing = desk_extras:Nothing\n")
    done = run(["strategies", "list", "--json"], tmp_path, desk_env(PYTHONPATH=f"{ROOT}:{site}"))
    assert done.returncode == 0, done.stderr
    listed = {s["name"]: s for s in json.loads(done.stdout)}
    assert listed["ep_breakout"]["source"] == "entry point ep_breakout = desk_extras:MyBreakout (desk-extras)"
    assert listed["ep_breakout"]["role"] == "slow"
    assert "strategy refused: entry point ep_missing = desk_extras:Nothing" in done.stderr


def _paper_desk(cwd: Path, env: dict[str, str]) -> str:
    desk = DeskProcess(cwd, env).start()
    try:
        desk.wait_healthy()
        desk.wait_drained()
    finally:
        code, _ = desk.terminate(timeout=20)
    assert code == 0, desk.output[-3000:]
    return desk.output


def test_the_paper_desk_trades_it_and_runs_without_it_when_it_is_gone(tmp_path: Path, mine: Path) -> None:
    feed = tmp_path / "feed"  # one symbol of the shared candles, linked, not copied
    feed.mkdir()
    for name in ("BTC-USDT_15m_binance.csv", "BTC-USDT_5m_binance.csv"):
        (feed / name).symlink_to(DATA / name)
    with_it, without = tmp_path / "with", tmp_path / "without"
    with_it.mkdir()
    env = desk_env(STRATEGIES_DIR=str(mine.parent), MARKET_FEED="replay", FEED_DATA=str(feed), FEED_SPEED="0")
    assert run(["migrate"], with_it, env).returncode == 0
    bots = with_it / "bots.yaml"
    bots.write_text(yaml.safe_dump({"id": "main", "symbols": ["BTCUSDT"], "strategies": {
        "my_breakout": {"lookback": 40}, "scalp": {}}}))
    assert run(["bots", "add", str(bots)], with_it, env).returncode == 0
    shutil.copytree(with_it / "var", without / "var")  # the same bot, not traded yet

    out = _paper_desk(with_it, env)
    assert "strategy refused" not in out and "strategy_failed" not in out
    db = with_it / "var" / "phantomdesk.db"
    trades = dict(sql(db, "SELECT strategy, count(*) FROM trades WHERE mode = 'paper' GROUP BY 1"))
    assert trades.get("my_breakout", 0) > 0, trades
    assert sql(db, "SELECT DISTINCT strategy_version FROM signals WHERE strategy = 'my_breakout'") == \
        [(version_of(mine),)]

    env.pop("STRATEGIES_DIR")  # its file is not there any more: the bot runs without it, one notice
    out = _paper_desk(without, env)
    notices = [line for line in out.splitlines() if "notice strategy_failed main" in line]
    assert len(notices) == 1 and "strategy my_breakout is off for this bot: not loaded" in notices[0], out[-3000:]
    db = without / "var" / "phantomdesk.db"
    assert dict(sql(db, "SELECT strategy, count(*) FROM signals GROUP BY 1")).keys() == {"scalp"}
    assert sql(db, "SELECT strategies FROM bots")[0][0].count("my_breakout") == 1  # kept in its configuration
    shown = run(["bots", "show", "main"], without, env)  # and shown as stored, so an edit does not drop it
    assert shown.returncode == 0 and "# strategy my_breakout: not loaded" in shown.stdout, shown.stderr
    assert yaml.safe_load(shown.stdout)["strategies"]["my_breakout"]["lookback"] == 40
