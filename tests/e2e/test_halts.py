"""A drawdown halt is visible everywhere and resuming it is deliberate.

A replay on the shared real data halts its bot (the drawdown guard, 2021-01). Then: `bots list`, the
desk's /health, /bots and /status all say halted, with the reason and since when; /resume in Telegram
asks first, stating what resets (the peak equity becomes the equity now) and changes nothing until the
button; the button resumes exactly the listed bot, audited with the admin's id.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conftest import CANDLES
from tests.fakes.telegram import TOKEN, FakeBotAPI, Sent
from tests.hostproc import DeskProcess, desk_env, run

ADMIN = 111
DATA = CANDLES / "binance_spot_2020-12_2021-07"


@pytest.fixture
def api() -> FakeBotAPI:
    with FakeBotAPI() as server:
        yield server  # type: ignore[misc]


def _rows(tmp_path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(tmp_path / "var" / "phantomdesk.db", timeout=10) as conn:
        return conn.execute(sql).fetchall()


def _ask(api: FakeBotAPI, text: str, contains: str) -> Sent:
    before = len(api.to(ADMIN))
    api.send_text(ADMIN, text)
    return api.reply_to(ADMIN, before, 30, contains)


def test_a_halt_shows_everywhere_and_resumes_only_by_its_button(tmp_path: Path, api: FakeBotAPI) -> None:
    env = desk_env(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_SERVER=api.url, TELEGRAM_ADMIN_IDS=str(ADMIN),
                   MARKET_FEED="replay", FEED_DATA=str(tmp_path / "none"))
    (tmp_path / "none").mkdir()
    done = run(["replay", "--data", str(DATA), "--from", "2020-12-01", "--to", "2021-01-20", "--no-ml"], tmp_path,
               env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [(status, reason, since)] = _rows(tmp_path, "SELECT status, status_reason, status_since FROM bots")
    assert status == "halted" and "drawdown" in reason and since is not None

    listing = run(["bots", "list"], tmp_path, env)
    assert listing.returncode == 0 and "halted since " in listing.stdout and "drawdown" in listing.stdout
    # a replay's bot is a research record the desk never trades; as a paper bot it is a desk bot halted by
    # that drawdown, with its saved state (equity, peak) as the replay left it
    _rows(tmp_path, "UPDATE bots SET mode = 'paper'")

    desk = DeskProcess(tmp_path, env).start()
    try:
        health = desk.wait_healthy()
        [bot] = health["bots"]
        assert bot["status"] == "halted" and "drawdown" in bot["reason"] and bot["since"]
        bots = _ask(api, "/bots", "Bots")
        assert "replay  halted" in bots.text and "since" in bots.text and "drawdown" in bots.text
        assert "halted since" in _ask(api, "/status replay", "Status").text

        # /resume asks, and says what resets; nothing changes before the button
        ask = _ask(api, "/resume replay", "Halted")
        assert "peak equity" in ask.text and "resets" in ask.text
        yes, _cancel = ask.callback_data
        assert _rows(tmp_path, "SELECT status FROM bots")[0][0] == "halted"

        callback = api.press(ADMIN, yes, ask)
        answer = api.wait_for(lambda: api.answers(callback), 30, "the answer")[0]
        assert answer.params.get("text") == "resumed"
        assert _rows(tmp_path, "SELECT status, status_reason FROM bots")[0] == ("running", None)
        assert _rows(tmp_path, "SELECT actor FROM audit_log WHERE action = 'resume'") == [(f"tg:{ADMIN}",)]
        assert desk.wait_healthy()["bots"][0]["status"] == "running"
        balance = _ask(api, "/balance", "Balance").text
        assert "replay" in balance and " 0.0%" in balance  # the peak was reset to the equity: no drawdown now
        again = api.press(ADMIN, yes, ask)
        assert api.wait_for(lambda: api.answers(again), 30, "the second answer")[0].params.get("text") == \
            "already decided"
        code, _ = desk.terminate(timeout=15)
        assert code == 0, desk.output[-3000:]
    finally:
        desk.kill()
