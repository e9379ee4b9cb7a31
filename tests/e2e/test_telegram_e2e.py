"""The real host process (`python -m bot`) against a local fake Bot API server, with a replayed market.

The conversation: /start, /stats, /chart equity (a real PNG arrives), a stranger's /pause (no effect,
at most one reply), a viewer's /pause (read-only), /pause by an admin, a restart of the process (the
pause survives it; the restarted process meets a 409 conflict, reported once), /resume, and a recovery
item approved by a button press, then pressed again ("already decided").
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from storage.db import create_engine
from storage.recovery import RecoveryBook
from tests.conftest import CANDLES
from tests.fakes.telegram import PNG_SIGNATURE, TOKEN, FakeBotAPI, Sent
from tests.hostproc import DeskProcess, desk_env, run

ADMIN, VIEWER, STRANGER = 111, 222, 333
DATA = CANDLES / "binance_spot_2020-12_2021-07"


@pytest.fixture
def api() -> FakeBotAPI:
    with FakeBotAPI() as server:
        yield server  # type: ignore[misc]


def _db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "phantomdesk.db"


def _query(tmp_path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(_db(tmp_path), timeout=10) as conn:
        return conn.execute(sql).fetchall()


def _status(tmp_path: Path) -> str:
    return _query(tmp_path, "SELECT status FROM bots WHERE id = 'main'")[0][0]


def _raise_item(tmp_path: Path) -> int:
    async def go() -> int:
        engine = create_engine(f"sqlite+aiosqlite:///{_db(tmp_path)}")
        try:
            item_id, _ = await RecoveryBook(engine).raise_item(
                "main", "unknown_position", dedupe_key="e2e:BTCUSDT", details={"symbol": "BTCUSDT", "qty": "0.01"},
                options=["adopt", "close_at_market"])
            return item_id
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _ask(api: FakeBotAPI, user: int, text: str, contains: str = "", timeout: float = 30.0) -> Sent:
    before = len(api.to(user))
    api.send_text(user, text)
    return api.reply_to(user, before, timeout, contains)


def test_conversation_with_the_real_host(tmp_path: Path, api: FakeBotAPI) -> None:
    env = desk_env(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_SERVER=api.url, TELEGRAM_ADMIN_IDS=str(ADMIN),
                   TELEGRAM_VIEWER_IDS=str(VIEWER), MARKET_FEED="replay", FEED_DATA=str(DATA),
                   DEFAULT_SYMBOLS="BTCUSDT,ETHUSDT")
    assert run(["migrate"], tmp_path, env).returncode == 0
    desk = DeskProcess(tmp_path, env).start()
    try:
        desk.wait_healthy()
        api.wait_for(lambda: "getUpdates" in api.requests, 30, "polling")
        assert "deleteWebhook" in api.requests and "setMyCommands" in api.requests

        assert "phantomdesk" in _ask(api, ADMIN, "/start", "hello").text

        # the replay closes trades as it goes
        api.wait_for(lambda: _query(tmp_path, "SELECT count(*) FROM trades WHERE status = 'closed'")[0][0] >= 3,
                     120, "closed trades")
        stats = _ask(api, ADMIN, "/stats", "Stats")
        assert "Trades: <b>" in stats.text and "Win rate" in stats.text
        assert any(d.startswith("rf:stats") for d in stats.callback_data)

        chart = _ask(api, ADMIN, "/chart equity", "equity")
        assert chart.method == "sendPhoto"
        assert chart.photo is not None and chart.photo.startswith(PNG_SIGNATURE) and len(chart.photo) > 20_000

        # a stranger changes nothing and hears it once
        assert _ask(api, STRANGER, "/pause all").text == "⛔ not authorized"
        api.send_text(STRANGER, "/pause main")
        api.send_text(STRANGER, "/close all")
        assert "read-only" in _ask(api, VIEWER, "/pause main").text  # the viewer's update comes after theirs
        assert len(api.to(STRANGER)) == 1
        assert _status(tmp_path) == "running"

        assert "paused: <b>main</b>" in _ask(api, ADMIN, "/pause main e2e <check>", "paused").text
        assert _status(tmp_path) == "paused"
        code, took = desk.terminate(timeout=15)
        assert code == 0 and took < 10, desk.output[-3000:]
        assert any("stopping" in s.text for s in api.to(ADMIN)[-3:]), desk.output[-4000:]
    finally:
        desk.kill()

    # the restarted process: another poller holds the token for a few seconds (409), reported once
    api.conflict_next(2)
    desk = DeskProcess(tmp_path, env).start()
    try:
        desk.wait_healthy()
        api.wait_for(lambda: "conflict is over" in desk.output, 40, "the conflict to end")
        assert desk.output.count("getUpdates conflict (409") == 1
        assert "Failed to fetch updates" not in desk.output

        bots = _ask(api, ADMIN, "/bots", "Bots")
        assert "main  paused" in bots.text and "e2e &lt;check&gt;" in bots.text
        assert "paused" in _ask(api, ADMIN, "/status", "Status").text
        assert _status(tmp_path) == "paused"
        health = desk.wait_healthy()
        assert [b["status"] for b in health["bots"]] == ["paused"]

        assert "running: <b>main</b>" in _ask(api, ADMIN, "/resume main", "running").text
        assert _status(tmp_path) == "running"

        # a recovery item: the notifier announces it with its buttons; approved by a press, pressed again
        item_id = _raise_item(tmp_path)
        announced = api.wait_for(lambda: [s for s in api.to(ADMIN) if f"recovery #{item_id}" in s.text], 40,
                                 "the recovery announcement")[0]
        assert "decision needed" in announced.text
        adopt = f"rv:{item_id}:adopt"
        assert announced.callback_data == [adopt, f"rv:{item_id}:close_at_market"]  # its options, nothing else
        listing = _ask(api, ADMIN, "/recovery", f"recovery #{item_id}")
        assert adopt in listing.callback_data
        first = api.press(ADMIN, adopt, announced)
        answer = api.wait_for(lambda: api.answers(first), 30, "the first answer")[0]
        assert answer.params.get("text") == "adopt: queued"  # a paper bot: no exchange account to act on
        edited = api.wait_for(lambda: [s for s in api.sent if s.method == "editMessageText"
                                       and s.params.get("message_id") == str(announced.message_id)], 30, "the edit")
        assert "<b>adopt</b>" in edited[0].text
        second = api.press(ADMIN, adopt, listing)
        again = api.wait_for(lambda: api.answers(second), 30, "the second answer")[0]
        assert again.params.get("text") == "already decided (approved)"
        row = _query(tmp_path, f"SELECT status, decision, decided_by FROM recovery_items WHERE id = {item_id}")[0]
        assert row == ("approved", "adopt", ADMIN)
        presses = _query(tmp_path, "SELECT actor, details FROM audit_log WHERE action = 'button' ORDER BY id")
        assert [actor for actor, _ in presses] == [f"tg:{ADMIN}", f"tg:{ADMIN}"]
        assert "already decided" in presses[1][1]

        code, _ = desk.terminate(timeout=15)
        assert code == 0, desk.output[-3000:]
    finally:
        desk.kill()
    assert TOKEN not in desk.output and TOKEN.split(":")[1] not in desk.output
