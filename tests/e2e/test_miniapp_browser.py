"""The Mini App in a real browser: Debian's Chromium driven by Playwright, against the real host process.

One desk (a two-week replay on the shared candles, then `python -m bot` with a fake Bot API and no market
feed, so nothing moves under the checks) and one browser. Telegram's side is a stub of window.Telegram.WebApp
carrying initData signed with the bot token, and the chat's theme. Checked: the menu button and the /status
button point at the app; an admin's overview shows the figures of /stats (desk.stats); pausing a bot through
the confirmation leaves it paused in the database, audited with the admin's id; a viewer sees no action
control and a forged action call gets 403; forged, expired and missing initData get 403 and nothing else.
Screenshots at 360 px, light and dark, go to the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.miniapp.initdata import sign
from core.desk import Desk
from storage.db import create_engine
from storage.desk_store import SqlDeskStore
from storage.recovery import RecoveryBook
from tests.conftest import CANDLES, IN_CI
from tests.fakes.telegram import TOKEN, FakeBotAPI
from tests.hostproc import DeskProcess, desk_env, run
from tests.servers import ServerUnavailable, chromium

T = TypeVar("T")
ADMIN, VIEWER, STRANGER = 111, 222, 333
DATA = CANDLES / "binance_spot_2020-12_2021-07"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LIGHT = {"bg_color": "#ffffff", "text_color": "#000000", "hint_color": "#707579", "link_color": "#3390ec",
         "button_color": "#3390ec", "button_text_color": "#ffffff", "secondary_bg_color": "#f4f4f5",
         "section_bg_color": "#ffffff", "destructive_text_color": "#e53935"}
DARK = {"bg_color": "#212121", "text_color": "#ffffff", "hint_color": "#aaaaaa", "link_color": "#8774e1",
        "button_color": "#8774e1", "button_text_color": "#ffffff", "secondary_bg_color": "#0f0f0f",
        "section_bg_color": "#212121", "destructive_text_color": "#ff595a"}


def init_data(user_id: int, auth_date: float | None = None, token: str = TOKEN) -> str:
    user = json.dumps({"id": user_id, "first_name": f"u{user_id}", "username": f"u{user_id}"}, separators=(",", ":"))
    return sign({"query_id": "AAE1", "user": user, "auth_date": str(int(auth_date or time.time()))}, token)


def stub(init: str, theme: dict[str, str], scheme: str) -> str:
    """What Telegram's script would put on the page: initData and the chat's theme."""
    return (f"window.Telegram = {{WebApp: {{initData: {json.dumps(init)}, themeParams: {json.dumps(theme)}, "
            f"colorScheme: {json.dumps(scheme)}, ready() {{}}, expand() {{}}, onEvent() {{}}}}}};")


def call(url: str, authorization: str | None, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": authorization} if authorization else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run beside Playwright's sync API, which keeps an event loop of its own in this thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db, timeout=10) as conn:
        return conn.execute(sql).fetchall()


async def _desk_stats(db: Path) -> dict[int | None, dict[str, Any]]:
    """/stats as the chat computes it (desk.stats), for each window of the overview."""
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        desk = Desk(SqlDeskStore(engine), None, clock=lambda: datetime.now(UTC))
        return {days: await desk.stats(days) for days in (1, 7, 30, None)}
    finally:
        await engine.dispose()


async def _raise_item(db: Path) -> int:
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        item_id, _ = await RecoveryBook(engine).raise_item(
            "replay", "unknown_position", dedupe_key="app:XRPUSDT", critical=True,
            details={"symbol": "XRPUSDT", "side": "Buy", "size": "120", "avg_price": "0.51", "stop_loss": None},
            options=["adopt", "close_at_market", "ignore"])
        return item_id
    finally:
        await engine.dispose()


@pytest.fixture
def api() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as server:
        yield server


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        executable = chromium()
    except ServerUnavailable as exc:
        if IN_CI:
            pytest.fail(f"Chromium unavailable: {exc} (CI is set: browser tests must run)")
        pytest.skip(f"Chromium unavailable: {exc}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # a fresh profile per launch (Playwright's temporary --user-data-dir); no background connections
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:  # Debian's build, not a browser Playwright downloaded
            debian = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60).stdout
            assert "Debian" in debian and browser.version in debian, (debian, browser.version)
            yield browser
        finally:
            browser.close()


def test_the_mini_app_in_a_real_browser(tmp_path: Path, api: FakeBotAPI, browser: Any) -> None:
    (tmp_path / "none").mkdir()  # the host's market feed: no candles, so nothing changes under the checks
    env = desk_env(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_SERVER=api.url, TELEGRAM_ADMIN_IDS=str(ADMIN),
                   TELEGRAM_VIEWER_IDS=str(VIEWER), MARKET_FEED="replay", FEED_DATA=str(tmp_path / "none"),
                   PUBLIC_URL="https://desk.example")
    done = run(["replay", "--data", str(DATA), "--from", "2021-03-01", "--to", "2021-03-15"], tmp_path, env,
               timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    db = tmp_path / "var" / "phantomdesk.db"
    with sqlite3.connect(db) as conn:  # a replay's record made a paper bot the host trades; its halt resumed
        conn.execute("UPDATE bots SET mode = 'paper', status = 'running', status_reason = NULL")
    item_id = in_thread(_raise_item(db))
    expected = in_thread(_desk_stats(db))
    assert expected[None]["trades"] > 20

    desk = DeskProcess(tmp_path, env).start()
    try:
        desk.wait_healthy()
        base = f"http://127.0.0.1:{desk.port}"
        # Telegram's entries: the menu button, and a button under /status, open <PUBLIC_URL>/app/
        menu = api.wait_for(lambda: [s for s in api.sent if s.method == "setChatMenuButton"], 30, "the menu button")
        assert json.loads(menu[0].params["menu_button"])["web_app"]["url"] == "https://desk.example/app/"
        api.send_text(ADMIN, "/status")
        status = api.wait_for(lambda: [s for s in api.to(ADMIN) if "Status" in s.text], 30, "/status")[0]
        buttons = [b for row in json.loads(status.params["reply_markup"])["inline_keyboard"] for b in row]
        assert {"text": "📊 Open the dashboard", "web_app": {"url": "https://desk.example/app/"}} in buttons

        _identity_is_telegrams(base)
        shots = Path(os.environ.get("PD_SCREENSHOTS") or tmp_path / "screenshots")  # CI may keep them
        _admin(browser, base, db, expected, item_id, shots)
        _viewer(browser, base, db, shots)
        page = browser.new_page(viewport={"width": 360, "height": 640})  # opened outside Telegram: no initData
        page.goto(base + "/app/")
        page.wait_for_selector("body[data-ready='denied']")
        assert "Open this page from the desk's bot" in page.inner_text("#view")
        page.close()
        code, _ = desk.terminate(timeout=15)
        assert code == 0, desk.output[-3000:]
    finally:
        desk.kill()
    assert init_data(ADMIN).split("&hash=")[0] not in desk.output and TOKEN not in desk.output  # never logged


def _identity_is_telegrams(base: str) -> None:
    """403 and nothing for every initData that does not prove an admin or a viewer."""
    good = init_data(ADMIN)
    assert call(base + "/api/me", f"tma {good}") == (200, {"id": ADMIN, "name": f"u{ADMIN}", "role": "admin"})
    tampered = good.replace(f"%22id%22%3A{ADMIN}", f"%22id%22%3A{ADMIN}0")
    refused = {
        "missing": None, "empty": "tma ", "another scheme": f"Bearer {good}", "tampered": f"tma {tampered}",
        "another bot's token": f"tma {init_data(ADMIN, token='654321:' + 'B' * 35)}",
        "expired": f"tma {init_data(ADMIN, auth_date=time.time() - 86_400 - 60)}",
        "from the future": f"tma {init_data(ADMIN, auth_date=time.time() + 3600)}",
        "a stranger": f"tma {init_data(STRANGER)}",
    }
    for what, authorization in refused.items():
        for path in ("/api/overview", "/api/trades"):
            assert call(base + path, authorization) == (403, {"error": "forbidden"}), what
        assert call(base + "/api/actions/pause", authorization, {"bot": "replay"}) == (403, {"error": "forbidden"})


def _open(browser: Any, base: str, user: int, theme: dict[str, str], scheme: str) -> Any:
    context = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2,
                                  color_scheme=scheme)
    context.add_init_script(stub(init_data(user), theme, scheme))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(base + "/app/")
    page.wait_for_selector("body[data-ready='overview']")
    page.errors = errors  # type: ignore[attr-defined]
    return page


REACHABLE = """Math.max(0, ...[...document.querySelectorAll('main button, main input, main select')]
    .map((el) => el.getBoundingClientRect().right))"""


def _screen(page: Any, name: str) -> None:
    page.click(f"nav button[data-screen='{name}']")
    page.wait_for_selector(f"body[data-ready='{name}']")


def _admin(browser: Any, base: str, db: Path, expected: dict[int | None, dict[str, Any]], item_id: int,
           shots: Path) -> None:
    page = _open(browser, base, ADMIN, LIGHT, "light")
    # the overview's figures are /stats' (desk.stats), in the API's JSON and on the screen
    overview = page.evaluate("""async (init) => (await fetch('/api/overview',
        {headers: {Authorization: 'tma ' + init}})).json()""", page.evaluate("window.tg.initData"))
    for window in overview["windows"]:
        stats = expected[window["days"]]
        for key, value in window["figures"].items():
            if key == "newest_exit":  # a window without trades: when the newest closed (the replay's 2021)
                assert (value and datetime.fromisoformat(value)) == stats.get(key), window["label"]
            else:
                assert value == stats.get(key), (window["label"], key)
        if not window["figures"]["trades"] and window["days"]:
            card = page.inner_text(f"[data-window='{window['label']}']")
            assert f"newest closed {stats['newest_exit']:%Y-%m-%d}" in card, card
    all_time = expected[None]
    figure = lambda key: page.inner_text(f"#all-time [data-figure='{key}']")  # noqa: E731
    assert figure("trades") == str(all_time["trades"])
    assert figure("win_rate") == f"{all_time['win_rate'] * 100:.1f}%"
    assert figure("net_pnl") == f"{all_time['net_pnl']:,.2f}"
    assert figure("profit_factor") == f"{all_time['profit_factor']:.2f}"
    assert figure("max_drawdown") == f"{all_time['max_drawdown']:,.2f} ({all_time['max_drawdown_pct']:.1f}%)"
    assert page.inner_text("[data-window='all'] [data-figure='net_pnl']").lstrip("+") == f"{all_time['net_pnl']:,.2f}"
    assert page.inner_text("article[data-bot='replay'] .badge") == "running"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(244, 244, 245)"  # the theme's
    assert page.evaluate("document.documentElement.scrollWidth") <= 360  # nothing wider than the phone
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "overview-light.png"), full_page=True)

    # pause through the confirmation: nothing changes until it is confirmed
    page.click("article[data-bot='replay'] button[data-action='pause']")
    page.wait_for_selector("dialog#confirm[open]")
    assert "Pause replay?" in page.inner_text("#confirm-title")
    assert rows(db, "SELECT status FROM bots") == [("running",)]
    page.screenshot(path=str(shots / "confirm-light.png"))
    page.click("#confirm-yes")
    page.wait_for_selector("#toast:not([hidden])")
    assert page.inner_text("#toast") == "paused: replay"
    assert rows(db, "SELECT status, status_reason FROM bots") == [("paused", f"paused by tg:{ADMIN}")]
    assert ("paused", f"tg:{ADMIN}") in rows(db, "SELECT action, actor FROM audit_log")
    assert (f"tg:{ADMIN}", '{"data": "app:pause:replay", "outcome": "paused: replay"}') in rows(
        db, "SELECT actor, details FROM audit_log WHERE action = 'button'")
    page.wait_for_selector("article[data-bot='replay'] .badge[data-status='paused']")

    # every screen renders at 360 px; the recovery inbox offers the item's options
    for name in ("equity", "trades", "phantoms", "recovery", "models", "risk", "system"):
        _screen(page, name)
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, name
        assert page.evaluate(REACHABLE) <= 360, name  # every control in reach, none scrolled out sideways
        page.screenshot(path=str(shots / f"{name}-light.png"), full_page=True)
    _screen(page, "recovery")
    assert page.locator(f"article[data-item='{item_id}'] button[data-action='decide']").count() == 3
    page.click(f"article[data-item='{item_id}'] button[data-action='decide']:has-text('ignore')")  # decided here
    page.wait_for_selector("dialog#confirm[open]")
    assert page.inner_text("#confirm-title") == f"Recovery #{item_id} (unknown_position, bot replay): ignore?"
    assert rows(db, f"SELECT status FROM recovery_items WHERE id = {item_id}") == [("pending",)]
    page.click("#confirm-yes")
    page.locator("#toast", has_text="ignore:").wait_for()
    assert rows(db, f"SELECT status, decision, decided_by FROM recovery_items WHERE id = {item_id}") == [
        ("approved", "ignore", ADMIN)]
    page.locator(f"article[data-item='{item_id}']").wait_for(state="detached")  # the inbox follows
    # a risk change through its confirmation, typed on the phone
    _screen(page, "risk")
    page.fill("[data-risk='replay'] input[name='risk_pct']", "0.5")
    page.click("[data-risk='replay'] .set:has(input[name='risk_pct']) button")
    page.wait_for_selector("dialog#confirm[open]")
    assert page.inner_text("#confirm-title") == "Set risk_pct = 0.5?"
    assert Decimal(str(rows(db, "SELECT risk_pct FROM bots")[0][0])) != Decimal("0.5")
    page.click("#confirm-yes")
    page.locator("#toast", has_text="applied").wait_for()
    assert Decimal(str(rows(db, "SELECT risk_pct FROM bots")[0][0])) == Decimal("0.5")
    assert ("risk_set", f"tg:{ADMIN}") in rows(db, "SELECT action, actor FROM audit_log")
    _screen(page, "trades")
    total = rows(db, "SELECT count(*) FROM trades WHERE status = 'closed'")[0][0]
    assert page.inner_text("#trades-count").startswith(f"{total} trades")
    # the pages, 30 trades each, newest exit first, walked to the end and back
    newest_first = [r[0] for r in rows(db, "SELECT id FROM trades WHERE status = 'closed' "
                                           "ORDER BY exit_time DESC, id DESC")]
    shown = lambda: page.eval_on_selector_all("tr[data-trade]", "rs => rs.map(r => r.dataset.trade)")  # noqa: E731
    pages = -(-total // 30)
    assert pages >= 3
    seen = shown()
    for n in range(2, pages + 1):
        page.click("button:has-text('Older')")
        page.locator("#trades-count", has_text=f"page {n}").wait_for()
        seen += shown()
    assert seen == newest_first and page.locator("button:has-text('Older')").is_disabled()
    page.click("button:has-text('Newer')")
    page.locator("#trades-count", has_text=f"page {pages - 1}").wait_for()
    assert shown() == newest_first[(pages - 2) * 30:(pages - 1) * 30]
    page.select_option("select[name='exit_reason']", "tp")
    take_profits = rows(db, "SELECT count(*) FROM trades WHERE status = 'closed' AND exit_reason = 'tp'")[0][0]
    page.locator("#trades-count", has_text=re.compile(f"^{take_profits} trades")).wait_for()  # the CSP forbids eval
    assert page.locator("tr[data-trade]").count() == min(take_profits, 30)
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()

    page = _open(browser, base, ADMIN, DARK, "dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(15, 15, 15)"
    page.screenshot(path=str(shots / "overview-dark.png"), full_page=True)
    _screen(page, "equity")
    page.wait_for_selector("#equity-chart canvas")
    page.screenshot(path=str(shots / "equity-dark.png"), full_page=True)
    _zoom(page)
    page.context.close()


TOUCH = """([start, end]) => {  // fingers at the x offsets `start` move to `end`, as a phone sends it
    const over = document.querySelector('#equity-chart .u-over'), r = over.getBoundingClientRect(), y = r.top + 20;
    const touches = (xs) => xs.map((x, i) => new Touch({identifier: i + 1, target: over, clientX: r.left + x,
                                                         clientY: y}));
    const send = (type, list) => over.dispatchEvent(new TouchEvent(type, {touches: list, cancelable: true,
                                                                          bubbles: true}));
    send('touchstart', touches(start));
    send('touchmove', touches(end));
    send('touchend', []);
}"""


def _zoom(page: Any) -> None:
    """The equity chart zooms in and out (buttons, a pinch), pans (a sideways swipe), both panes together
    (view() reads each pane's time range)."""
    def view() -> tuple[float, float]:
        equity, drawdown = (page.locator(f"#{name}-chart") for name in ("equity", "drawdown"))
        shown = float(equity.get_attribute("data-x-min")), float(equity.get_attribute("data-x-max"))
        assert (float(drawdown.get_attribute("data-x-min")), float(drawdown.get_attribute("data-x-max"))) == shown
        return shown

    lo, hi = view()
    full = hi - lo
    assert full > 10 * 86_400  # the replay's two weeks
    page.click("button[data-zoom='in']")
    a, b = view()
    assert b - a == pytest.approx(full / 2) and (a + b) / 2 == pytest.approx((lo + hi) / 2)
    page.evaluate(TOUCH, [[100, 140], [60, 180]])  # a pinch: fingers three times as far apart, a third of the span
    c, d = view()
    assert d - c == pytest.approx(full / 6)
    page.evaluate(TOUCH, [[200], [100]])  # a swipe to the left: later in time, the span kept
    e, f = view()
    assert f - e == pytest.approx(full / 6) and e > c
    page.click("button[data-zoom='out']")
    assert view()[1] - view()[0] == pytest.approx(full / 3)
    page.click("button[data-zoom='reset']")
    assert view() == (lo, hi)


def _viewer(browser: Any, base: str, db: Path, shots: Path) -> None:
    page = _open(browser, base, VIEWER, LIGHT, "light")
    assert page.locator("button.act").count() == 0  # no action control for a viewer
    page.screenshot(path=str(shots / "overview-viewer.png"), full_page=True)
    for name in ("recovery", "models", "risk"):
        _screen(page, name)
        assert page.locator("button.act").count() == 0 and page.locator("input").count() == 0, name
    forged = page.evaluate("""async (init) => {
        const post = (path, body) => fetch('/api' + path, {method: 'POST', body: JSON.stringify(body),
            headers: {Authorization: 'tma ' + init, 'Content-Type': 'application/json'}}).then(r => r.status);
        return [await post('/actions/resume', {bot: 'replay'}), await post('/actions/pause', {bot: 'replay'}),
                await post('/confirm', {action: 'resume', target: 'replay', token: 'x'})];
    }""", page.evaluate("window.tg.initData"))
    assert forged == [403, 403, 403]
    assert rows(db, "SELECT status FROM bots") == [("paused",)]
    # the numbers refresh without a reload: an admin resumes the bot elsewhere, the viewer's page follows
    _screen(page, "overview")
    page.wait_for_selector("article[data-bot='replay'] .badge[data-status='paused']")
    admin = f"tma {init_data(ADMIN)}"
    code, ask = call(base + "/api/actions/resume", admin, {"bot": "replay"})
    assert code == 200, ask
    assert call(base + "/api/confirm", admin, {k: ask[k] for k in ("action", "target", "token")}) == (
        200, {"ok": True, "message": "running: replay", "lines": []})
    page.wait_for_selector("article[data-bot='replay'] .badge[data-status='running']", timeout=30_000)
    page.context.close()
