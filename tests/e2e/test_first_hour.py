"""A new user's first hour: in a fresh directory, `make run`'s own commands (read from the Makefile), then the
desk (`python -m bot`) with a fake Bot API server, and the admin typing every command the README lists, in
its order. No reply carries a traceback or a raw Python value, the desk's log has no traceback, and the
figures that describe one thing agree: the demo's report, `/bots`, `/balance`, `/status` and `/stats` about
the demo bot; `/bots` and `/status` about the desk's own first bot.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fakes.telegram import TOKEN, FakeBotAPI, Sent
from tests.hostproc import ROOT, DeskProcess, desk_env, run

ADMIN = 111
# what a reply to each README command contains (a command the README gains must be added here)
MARKERS = {"/start": "hello", "/help": "Commands", "/bots": "Bots", "/status": "Status", "/balance": "Balance",
           "/stats": "Stats", "/daily": "Daily PnL", "/recent": "Recent trades", "/performance": "Performance",
           "/chart": "equity", "/pause": "paused", "/resume": "running", "/close": "lose", "/retrain": "retrain:",
           "/ml_stats": "ML filter", "/phantom_stats": "Phantoms", "/db_stats": "Database", "/health": "Health",
           "/jobs": "Jobs", "/risk": "Risk settings", "/risk set": "risk_pct", "/recovery": "recovery",
           "/analysis": "Analysis", "/universe": "universe"}
EXAMPLES = {"SYMBOL": "BTCUSDT", "KEY": "risk_pct", "VALUE": "1"}
RAW = re.compile(r"Traceback|Decimal\(|datetime\(|\{'|\['|\bNone\b|\bnan\b|<class |object at 0x|\bTrue\b|\bFalse\b")
NOTICE = re.compile(r"^\S+ <b>[^<]+</b> · ")  # "🟢 <b>main</b> · opened ...": a notification, not a reply


def make_run_commands() -> list[list[str]]:
    """The `python -m bot` commands of the Makefile's `run` target, in order."""
    recipe = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    return [line.split("-m bot", 1)[1].split() for line in recipe.splitlines() if "-m bot" in line]


def readme_commands() -> list[str]:
    """The Telegram commands as the README lists them, each made concrete: optional arguments left out, the
    first of alternatives taken, placeholders given an example."""
    readme = (ROOT / "README.md").read_text()
    listing = readme[readme.index("Commands (HTML"):readme.index("The same commands work")].split("):", 1)[1]
    out = []
    for usage in re.findall(r"`(/[^`]+)`", listing):
        words = [w.split("|")[0] for w in usage.split() if not w.startswith("[")]
        out.append(" ".join(EXAMPLES.get(w, w) for w in words))
    return list(dict.fromkeys(out))  # /help is named twice


def _marker(command: str) -> str:
    words = command.split()
    return MARKERS.get(" ".join(words[:2]), MARKERS[words[0]])


def _reply(api: FakeBotAPI, command: str) -> Sent:
    before = len(api.to(ADMIN))
    api.send_text(ADMIN, command)
    marker = _marker(command)

    def found() -> Sent | None:
        return next((s for s in api.to(ADMIN)[before:] if marker in s.text and not NOTICE.match(s.text)), None)

    return api.wait_for(found, 60, f"the reply to {command}")


def _figure(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{pattern!r} not in:\n{text}"
    return match.group(1)


@pytest.fixture
def api() -> FakeBotAPI:
    with FakeBotAPI() as server:
        yield server  # type: ignore[misc]


def test_the_readme_conversation_after_make_run(tmp_path: Path, api: FakeBotAPI) -> None:
    env = desk_env(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_SERVER=api.url, TELEGRAM_ADMIN_IDS=str(ADMIN))
    steps = make_run_commands()
    assert [s[0] for s in steps] == ["migrate", "demo"]
    outputs = []
    for args in steps:
        done = run(args, tmp_path, env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout + done.stderr)
    report = outputs[-1]
    assert "Traceback" not in "".join(outputs) and not re.search(r"\{'|\['|Decimal\(", report)
    demo_end = _figure(r"balance [\d,.]+ → ([\d,.]+) USDT", report)
    demo_trades = int(_figure(r"executed (\d+),", report))

    desk = DeskProcess(tmp_path, env).start()
    try:
        desk.wait_healthy(until=lambda b: [x for x in b["bots"] if x["running_here"]])
        api.wait_for(lambda: "getUpdates" in api.requests, 30, "polling")
        commands = readme_commands()
        assert len(commands) >= 20 and commands[0] == "/start"
        replies = {command: _reply(api, command) for command in commands}

        # every message the admin received (replies and notifications) reads as text, not as Python
        for sent in api.to(ADMIN):
            assert not RAW.search(sent.text), sent.text

        # a first start after the demo: the desk's own paper bot trades, the demo is a record of its replay
        bots = replies["/bots"].text
        assert re.search(r"^demo +halted +replay .* –$", bots, re.MULTILINE), bots  # a record: nobody trades it
        assert re.search(r"^main +running +paper .*\bhere(</pre>)?$", bots, re.MULTILINE), bots
        assert "main</b> running" in replies["/status"].text or "main</b> paused" in replies["/status"].text
        assert "demo</b> halted since" in replies["/status"].text and "never traded" in replies["/status"].text

        # one demo, one set of figures: its report, /bots, /balance and /stats agree
        assert _figure(r"^demo +halted +replay +\d+ +([\d,.]+)", bots) == demo_end
        assert _figure(r"^demo +([\d,.]+)", replies["/balance"].text) == demo_end
        demo_stats = _reply(api, "/stats demo").text
        assert _figure(r"Trades: <b>(\d+) ", demo_stats) == str(demo_trades)
        # wall-clock days hold none of these market-time trades: /daily says where the newest one is
        assert "no trade closed in these days; the newest closed 20" in replies["/daily"].text
        assert "halted" not in replies["/pause"].text  # the pause reached the desk's bot, not the record

        code, _ = desk.terminate(timeout=15)
        assert code == 0, desk.output[-3000:]
        assert "Traceback" not in desk.output, desk.output[-5000:]
    finally:
        desk.kill()
