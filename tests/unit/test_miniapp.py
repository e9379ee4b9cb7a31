"""The Mini App's server side: initData validation against the specification, and the API in-process.

initData: a vector computed here from Telegram's algorithm (independently of bot/miniapp/initdata.py), a
hand-written one (its hash computed once with openssl), aiogram's checker agreeing, and every way to be
refused. The API: over the same replayed desk and runtime stand-in as the chat's handler tests — the
overview equals desk.stats, trade pages cover every closed trade once, the equity curve ends where the
trades do, and every action needs an admin and a confirmation bound to that admin, acts once, and is audited.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from aiogram.utils.web_app import check_webapp_signature
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.miniapp import MiniAppApi, mount_miniapp
from bot.miniapp.initdata import InvalidInitData, WebAppUser, sign, validate
from bot.settings import SettingsError, load_settings
from bot.telegram import _set_commands, build_dispatcher, commands, set_webhook
from bot.telegram.auth import AuthMiddleware
from bot.telegram.keyboards import Confirmations
from core.desk import Actor, Desk
from storage.db import create_engine
from storage.desk_store import SqlDeskStore
from storage.recovery import RecoveryBook
from tests.fakes.telegram import TOKEN
from tests.unit.test_telegram_handlers import (  # noqa: F401
    NOW,
    FakeRuntime,
    Harness,
    _audit,
    _settings,
    _warm_engine,
    desk_url,
    h,
    replay_db,
)

ADMIN, OTHER_ADMIN, VIEWER, STRANGER = 1001, 1002, 2002, 3003
DAY = 86_400


# --- initData -------------------------------------------------------------------------------------------------
def spec_hash(fields: dict[str, str], token: str) -> str:
    """Telegram's algorithm, written out here: HMAC-SHA256 keyed by HMAC-SHA256("WebAppData", token) over the
    sorted key=value lines of every field but hash."""
    key = hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()
    lines = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    return hmac.new(key, lines.encode(), hashlib.sha256).hexdigest()


def user_json(user_id: int) -> str:
    return json.dumps({"id": user_id, "first_name": "Ann", "username": f"ann{user_id}"}, separators=(",", ":"))


FIELDS = {"query_id": "AAHdF6IQAAAAAN0XohDhrOrc", "user": user_json(ADMIN), "auth_date": "1700000000"}

# written by hand; its hash computed with openssl from the specification (not with Python):
#   KEY=$(printf %s "$TOKEN" | openssl dgst -sha256 -hmac WebAppData -binary | xxd -p -c 256)
#   printf 'auth_date=1700000000\nquery_id=AAHdF6IQAAAAAN0XohDhrOrc\nuser=%s' "$USER" |
#       openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEY
HAND_TOKEN = "1234567890:TEST_only_not_a_real_bot_token_xyz"
HAND_USER = ('{"id":279058397,"first_name":"Vladislav","last_name":"Kibenko","username":"vdkfrost",'
             '"language_code":"ru","is_premium":true,"allows_write_to_pm":true}')
HAND_INIT_DATA = ("query_id=AAHdF6IQAAAAAN0XohDhrOrc&user=" + quote(HAND_USER, safe="") + "&auth_date=1700000000"
                  "&hash=ea6b988e55ec360e2d4c02648e1588d630096efd2bcd2716669feebe1e2d32d0")


def test_a_vector_computed_from_the_specification() -> None:
    init_data = urlencode({**FIELDS, "hash": spec_hash(FIELDS, TOKEN)})
    assert validate(init_data, TOKEN, now=1700000000 + 60, max_age_s=DAY) == \
        WebAppUser(ADMIN, "Ann", f"ann{ADMIN}", 1700000000)
    assert sign(FIELDS, TOKEN) == init_data  # the tests' and benchmarks' signer is the same algorithm
    assert check_webapp_signature(TOKEN, init_data)  # and so is aiogram's


def test_a_hand_written_vector() -> None:
    user = validate(HAND_INIT_DATA, HAND_TOKEN, now=1700000000 + 3600, max_age_s=DAY)
    assert user == WebAppUser(279058397, "Vladislav", "vdkfrost", 1700000000)
    assert check_webapp_signature(HAND_TOKEN, HAND_INIT_DATA)


def _refused(init_data: str, now: float = 1700000000 + 60, token: str = TOKEN) -> str:
    with pytest.raises(InvalidInitData) as caught:
        validate(init_data, token, now, DAY)
    return str(caught.value)


def test_every_way_to_be_refused() -> None:
    good = sign(FIELDS, TOKEN)
    assert _refused("") == "missing or oversized"
    assert _refused(good + "&x=" + "a" * 9000) == "missing or oversized"
    assert _refused(good, token="654321:" + "B" * 35) == "bad signature"  # another bot's login
    assert _refused(good.replace("auth_date=1700000000", "auth_date=1700000001")) == "bad signature"
    assert _refused(sign({**FIELDS, "user": user_json(ADMIN)}, TOKEN).replace(
        quote(f'"id":{ADMIN}', safe=""), quote(f'"id":{VIEWER}', safe=""))) == "bad signature"
    assert _refused(good.rsplit("&hash=", 1)[0]) == "no hash"
    assert _refused(good.rsplit("&hash=", 1)[0] + "&hash=" + "A" * 64) == "no hash"
    assert _refused(good + "&auth_date=1700000000") == "a field given twice"
    assert _refused("not a query string") == "not a query string"
    assert _refused(good, now=1700000000 + DAY + 1) == "expired"
    assert _refused(good, now=1700000000 - 120) == "auth_date in the future"
    no_user = {k: v for k, v in FIELDS.items() if k != "user"}
    assert _refused(sign(no_user, TOKEN)) == "no auth_date or user"
    # a refusal never carries the data
    assert all(FIELDS["query_id"] not in _refused(x) for x in (good + "x", good.replace("Ann", "Bob")))


def test_settings_public_url() -> None:
    base = {"_env_file": None, "telegram_bot_token": TOKEN}
    assert load_settings(**base).miniapp_url is None
    assert load_settings(**base, public_url="https://desk.example/").miniapp_url == "https://desk.example/app/"
    assert load_settings(**base, telegram_webhook_url="https://d.example/telegram/webhook",
                         telegram_webhook_secret="s3cret").miniapp_url == "https://d.example/app/"
    with pytest.raises(SettingsError, match="PUBLIC_URL"):
        load_settings(**base, public_url="http://desk.example")
    assert load_settings(**base).miniapp_auth_max_age_s == DAY


# --- the API --------------------------------------------------------------------------------------------------
@dataclass
class App:
    client: TestClient
    api: MiniAppApi
    desk: Desk
    store: SqlDeskStore
    runtime: FakeRuntime
    db: Path

    def auth(self, user: int, age_s: float = 0) -> dict[str, str]:
        data = sign({"user": user_json(user), "auth_date": str(int(time.time() - age_s))}, TOKEN)
        return {"Authorization": f"tma {data}"}

    async def get(self, path: str, user: int = ADMIN, status: int = 200) -> Any:
        resp = await self.client.get(path, headers=self.auth(user))
        assert resp.status == status, await resp.text()
        return await resp.json()

    async def post(self, path: str, body: dict[str, Any], user: int = ADMIN, status: int = 200) -> Any:
        resp = await self.client.post(path, json=body, headers=self.auth(user))
        assert resp.status == status, await resp.text()
        return await resp.json()

    async def confirm(self, ask: dict[str, Any], user: int = ADMIN, status: int = 200, cancel: bool = False) -> Any:
        return await self.post("/api/confirm", {"action": ask["action"], "target": ask["target"],
                                                "token": ask["token"], "cancel": cancel}, user, status)

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(query).fetchall()

    def sql_write(self, query: str) -> None:
        with sqlite3.connect(self.db) as conn:
            conn.execute(query)


@pytest.fixture
async def app(desk_url: str) -> AsyncIterator[App]:  # noqa: F811
    engine = create_engine(desk_url)
    store = SqlDeskStore(engine)
    config = await store.bot_config("replay")
    assert config is not None
    runtime = FakeRuntime(await _warm_engine(desk_url, config), engine)

    async def health() -> dict[str, Any]:
        return {"status": "ok", "faults": [], "database": "ok", "redis": "disabled", "feed": "running"}

    desk = Desk(store, runtime, clock=lambda: NOW, health_fn=health)
    roles = AuthMiddleware({ADMIN, OTHER_ADMIN}, {VIEWER})
    web_app = web.Application()
    api = mount_miniapp(web_app, desk, TOKEN, roles.role, DAY)
    client = TestClient(TestServer(web_app))
    await client.start_server()
    yield App(client, api, desk, store, runtime, Path(desk_url.split("///", 1)[1]))
    await client.close()
    await engine.dispose()


async def test_only_telegrams_admins_and_viewers_get_anything(app: App) -> None:
    good = app.auth(ADMIN)["Authorization"]
    for headers in ({}, {"Authorization": ""}, {"Authorization": good.replace("tma ", "Bearer ")},
                    {"Authorization": good[:-1] + ("0" if good[-1] != "0" else "1")}, app.auth(ADMIN, age_s=DAY + 5),
                    app.auth(STRANGER)):
        for path in ("/api/me", "/api/overview", "/api/trades", "/api/recovery"):
            resp = await app.client.get(path, headers=headers)
            assert (resp.status, await resp.json()) == (403, {"error": "forbidden"})
        resp = await app.client.post("/api/actions/pause", json={"bot": "replay"}, headers=headers)
        assert resp.status == 403
    assert app.api.refusals.total == 6 * 5
    assert await app.get("/api/me", VIEWER) == {"id": VIEWER, "name": f"ann{VIEWER}", "role": "viewer"}
    resp = await app.client.get("/api/me", headers=app.auth(ADMIN))
    assert resp.headers["Cache-Control"] == "no-store" and "Set-Cookie" not in resp.headers


async def test_the_overview_is_the_desks(app: App) -> None:
    o = await app.get("/api/overview", VIEWER)
    assert o["me"]["role"] == "viewer"
    for window in o["windows"]:
        stats = await app.desk.stats(window["days"])
        figures = {k: v for k, v in window["figures"].items() if v is not None or k in stats}
        assert figures == {k: stats[k] for k in figures}, window["label"]
    assert o["windows"][1]["figures"]["trades"] > 0  # the replay's last week (the desk's clock is its end)
    assert o["windows"][-1]["figures"]["return_days"] < o["min_ratio_days"] == 30  # Sharpe over 14 days: flagged
    [bot] = o["bots"]
    assert (bot["id"], bot["status"], bot["running_here"], bot["starting"]) == ("replay", "running", True, False)
    assert [(p["trade_id"], p["symbol"], p["side"]) for p in bot["positions"]] == [("t-open-1", "BTCUSDT", "long")]
    assert bot["positions"][0]["last"] is not None and bot["positions"][0]["unrealized"] is not None
    [balance] = await app.desk.balance()  # /balance's figures: equity, peak, drawdown, today by the wall clock
    assert (bot["equity"], bot["peak"], bot["drawdown_pct"], bot["today"], bot["saved_at"]) == (
        float(balance.equity or 0), float(balance.peak or 0), float(balance.drawdown_pct or 0), float(balance.day_pnl),
        None)


async def test_a_window_without_trades_says_when_the_newest_closed(app: App) -> None:
    app.desk.clock = lambda: NOW + timedelta(days=400)  # a year after the replay's market time
    o = await app.get("/api/overview")
    newest = app.sql("SELECT max(exit_time) FROM trades WHERE status = 'closed'")[0][0]
    for window in o["windows"][:3]:
        assert window["figures"]["trades"] == 0
        assert datetime.fromisoformat(window["figures"]["newest_exit"]).replace(tzinfo=None) == \
            datetime.fromisoformat(newest).replace(tzinfo=None)
    assert o["windows"][3]["figures"]["trades"] > 0 and o["windows"][3]["figures"]["newest_exit"] is None


async def test_a_bot_not_traded_here_shows_its_saved_state(app: App) -> None:
    app.sql_write("UPDATE bots SET mode = 'replay'")
    app.runtime.trader_ = None  # type: ignore[assignment]  # nothing of it runs in this process
    app.runtime.engine = lambda bot_id: None  # type: ignore[method-assign]
    [bot] = (await app.get("/api/overview"))["bots"]
    assert (bot["mode"], bot["running_here"], bot["positions"]) == ("replay", False, [])
    [(equity, taken_at)] = app.sql("SELECT equity, taken_at FROM bot_states ORDER BY taken_at DESC LIMIT 1")
    assert bot["equity"] == pytest.approx(float(equity))  # the replay's checkpoint, as /balance
    assert datetime.fromisoformat(bot["saved_at"]).replace(tzinfo=None) == datetime.fromisoformat(taken_at)
    # "all" leaves a replay's record out, as the chat's /pause all; named, it is reached
    assert (await app.post("/api/actions/pause", {"bot": "all"}))["title"] == "Nothing to pause"
    assert (await app.post("/api/actions/pause", {"bot": "replay"}))["title"] == "Pause replay?"
    # nothing runs here: a retrain is refused when asked, as /retrain
    assert (await app.post("/api/actions/retrain", {}, status=400))["error"] == "no bot is running in this process"


async def test_retrain_is_confirmed_then_queued(app: App) -> None:
    assert await app.post("/api/actions/retrain", {}, VIEWER, 403) == {"error": "forbidden"}
    assert "unknown strategy" in (await app.post("/api/actions/retrain", {"strategy": "nope"}, status=400))["error"]
    ask = await app.post("/api/actions/retrain", {"strategy": "scalp"})
    assert ask["title"] == "Retrain scalp?" and ask["lines"][0].startswith("replay:")
    assert app.runtime.retrained == []  # nothing before the confirmation
    done = await app.confirm(ask)
    assert done == {"ok": True, "message": "retrain", "lines": ["replay: scalp queued"]}
    assert app.runtime.retrained == [("replay", "scalp")]
    assert [r.actor for r in await _audit(app.store, "retrain")] == ["tg:1001"]


async def test_trade_pages_cover_every_closed_trade_once(app: App) -> None:
    expected = [r[0] for r in app.sql("SELECT id FROM trades WHERE status = 'closed' ORDER BY exit_time DESC, id DESC")]
    seen, cursor = [], None
    while True:
        page = await app.get("/api/trades?limit=7" + (f"&before={quote(cursor)}" if cursor else ""))
        assert page["total"] == len(expected)
        seen += [r["id"] for r in page["rows"]]
        if not page["more"]:
            assert page["next"] is None
            break
        cursor = page["next"]
    assert seen == expected
    facets = await app.get("/api/trades/facets")
    assert facets["bots"] == ["replay"] and "BTCUSDT" in facets["symbols"] and "sl" in facets["exit_reasons"]
    strategy, reason = facets["strategies"][0], "tp"
    page = await app.get(f"/api/trades?bot=replay&symbol=btcusdt&strategy={strategy}&exit_reason={reason}&limit=200")
    assert page["total"] == len(page["rows"]) == app.sql(
        "SELECT count(*) FROM trades WHERE status = 'closed' AND symbol = 'BTCUSDT' AND strategy = ? "
        "AND exit_reason = 'tp'".replace("?", repr(strategy)))[0][0]
    assert {(r["symbol"], r["strategy"], r["exit_reason"]) for r in page["rows"]} <= {("BTCUSDT", strategy, reason)}
    for bad in ("limit=500", "limit=-1", "before=yesterday", "before=2021-03-01T00:00:00|", "bot=nobody"):
        assert "error" in await app.get("/api/trades?" + bad, status=400)


async def test_the_equity_curve_ends_where_the_trades_do(app: App) -> None:
    e = await app.get("/api/equity")
    stats = await app.desk.stats()
    assert e["trades"] == stats["trades"] and e["capital"] == 10_000
    assert e["equity"][-1] == pytest.approx(10_000 + stats["net_pnl"])
    assert min(e["drawdown_pct"]) == pytest.approx(-stats["max_drawdown_pct"])
    assert e["times_ms"] == sorted(e["times_ms"])
    week = await app.get("/api/equity?days=7")
    assert 0 < week["trades"] < e["trades"]


async def test_every_screen_answers(app: App) -> None:
    phantoms = await app.get("/api/phantoms", VIEWER)
    stats = await app.desk.phantom_stats()
    assert {s["strategy"] for s in phantoms["strategies"]} == set(stats.by_strategy)
    assert phantoms["total"]["total"] == stats.all.actions["ALL"]["total"]
    assert (await app.get("/api/phantoms?symbol=btcusdt"))["symbol"] == "BTCUSDT"
    models = await app.get("/api/models", VIEWER)
    assert models["latest"] and {m["strategy"] for m in models["latest"]} <= {"trend_pullback", "mean_reversion",
                                                                            "scalp"}
    system = await app.get("/api/system", VIEWER)
    assert system["status"] == "ok" and system["rows"]["trades"] > 0 and system["candles"] > 0
    [risk] = await app.get("/api/risk", VIEWER)
    assert {s["key"]: s["value"] for s in risk["settings"]}["risk_pct"] == 1
    assert await app.get("/api/recovery", VIEWER) == []


async def test_pause_needs_an_admin_and_the_confirmation_of_the_admin_who_asked(app: App) -> None:
    assert await app.post("/api/actions/pause", {"bot": "replay"}, VIEWER, 403) == {"error": "forbidden"}
    ask = await app.post("/api/actions/pause", {"bot": "replay", "reason": "news <b>"})
    assert ask["title"] == "Pause replay?" and ask["expires_in_s"] == 300
    assert app.sql("SELECT status FROM bots") == [("running",)]  # nothing before the confirmation
    assert await app.confirm(ask, VIEWER, 403) == {"error": "forbidden"}
    refused = await app.confirm(ask, OTHER_ADMIN, 409)
    assert refused["message"] == "only the admin who asked can confirm this"
    ask = await app.post("/api/actions/pause", {"bot": "all"})  # the other admin's try used the first token up
    assert await app.confirm(ask) == {"ok": True, "message": "paused: replay", "lines": []}
    assert app.sql("SELECT status, status_reason FROM bots") == [("paused", "paused by tg:1001")]
    assert app.runtime.paused == {"replay": True}
    assert (await app.confirm(ask, status=409))["message"] == "already decided"
    assert [(r.actor, r.details["data"], r.details["outcome"]) for r in await _audit(app.store)] == [
        ("tg:1002", "app:pause:replay", "only the admin who asked can confirm this"),
        ("tg:1001", "app:pause:all", "paused: replay"), ("tg:1001", "app:pause:all", "already decided")]
    assert [r.actor for r in await _audit(app.store, "paused")] == ["tg:1001"]

    ask = await app.post("/api/actions/resume", {"bot": "replay"})
    assert "trades again at once" in ask["lines"][0]
    assert (await app.confirm(ask, cancel=True))["message"] == "cancelled: resume replay"
    assert app.sql("SELECT status FROM bots") == [("paused",)]
    app.api.confirmations.ttl = -1  # born expired
    ask = await app.post("/api/actions/resume", {"bot": "replay"})
    assert (await app.confirm(ask, status=409))["message"].startswith("expired")
    app.api.confirmations.ttl = 300
    ask = await app.post("/api/actions/resume", {"bot": "replay"})
    assert (await app.confirm(ask))["message"] == "running: replay"
    assert app.sql("SELECT status FROM bots") == [("running",)]


async def test_close_acts_on_exactly_the_listed_trades(app: App) -> None:
    assert "error" in await app.post("/api/actions/close", {"symbol": "ETHUSDT"}, status=400)  # nothing open
    assert "error" in await app.post("/api/actions/close", {"symbol": "not a symbol"}, status=400)
    ask = await app.post("/api/actions/close", {"symbol": "btcusdt", "bot": "replay"})
    assert ask["title"] == "Close 1 position(s) at market?" and "t-open-1" in ask["lines"][0]
    assert app.runtime.closed == []
    done = await app.confirm(ask)
    assert done["message"] == "closing 1" and app.runtime.closed == ["t-open-1"]
    assert [r.actor for r in await _audit(app.store, "close")] == ["tg:1001"]


async def test_a_recovery_decision_is_taken_once(app: App) -> None:
    item_id, _ = await RecoveryBook(app.store.db).raise_item(
        "replay", "unknown_position", dedupe_key="pos:SOL", critical=True, details={"symbol": "SOLUSDT", "qty": "3"},
        options=["adopt", "close_at_market", "ignore"])
    [item] = await app.get("/api/recovery", VIEWER)
    assert [o["name"] for o in item["options"]] == ["adopt", "close_at_market", "ignore"]
    assert item["critical"] and "NO stop-loss" in item["warnings"][0] and item["details"]["qty"] == "3"
    assert "not an option" in (await app.post("/api/actions/decide", {"item_id": item_id, "option": "reject"},
                                              status=400))["error"]
    first = await app.post("/api/actions/decide", {"item_id": item_id, "option": "adopt"})
    second = await app.post("/api/actions/decide", {"item_id": item_id, "option": "ignore"})
    assert (await app.confirm(first))["message"] == "adopt: queued"  # a paper bot: no exchange account here
    assert (await app.confirm(second, status=200))["message"] == "already decided (approved)"  # re-checked at the act
    assert app.sql(f"SELECT status, decision, decided_by FROM recovery_items WHERE id = {item_id}") == [
        ("approved", "adopt", ADMIN)]
    assert "not pending" in (await app.post("/api/actions/decide", {"item_id": item_id, "option": "adopt"},
                                            status=400))["error"]


async def test_a_risk_change_is_validated_when_asked_and_applied_when_confirmed(app: App) -> None:
    assert (await app.post("/api/actions/risk", {"key": "risk_pct", "value": "99"}, status=400))["error"] == \
        "risk_pct must be above 0 and at most 10"  # the desk's rule and words, as /risk set
    assert "unknown key" in (await app.post("/api/actions/risk", {"key": "x", "value": "1"}, status=400))["error"]
    ask = await app.post("/api/actions/risk", {"key": "max_leverage", "value": "25", "bot": "replay"})
    assert "danger level" in ask["lines"][0]
    assert (await app.desk.risk("replay"))[0].settings["max_leverage"] != Decimal(25)
    assert (await app.confirm(ask))["lines"] == ["replay: max_leverage 10 → 25"]
    assert (await app.desk.risk("replay"))[0].settings["max_leverage"] == Decimal(25)
    assert "error" in await app.post("/api/actions/nothing", {}, status=404)
    resp = await app.client.post("/api/actions/pause", data="[", headers=app.auth(ADMIN))
    assert resp.status == 400


async def test_the_pages_are_served_with_their_own_files_only(app: App) -> None:
    resp = await app.client.get("/app", allow_redirects=False)
    assert resp.status == 308 and resp.headers["Location"] == "/app/"
    resp = await app.client.get("/app/")
    page = await resp.text()
    assert resp.status == 200 and "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert "http" not in page.replace('"https://web.telegram.org"', "")  # no CDN: every asset is the desk's
    for asset in ("static/app.js", "static/tg.js", "static/app.css", "static/vendor/uplot/uPlot.iife.min.js",
                  "static/vendor/uplot/LICENSE"):
        assert (await app.client.get("/app/" + asset)).status == 200, asset
    spec = await (await app.client.get("/api/openapi.yaml")).text()
    assert spec.startswith("openapi: 3.")
    assert (await app.client.get("/app/static/../../initdata.py")).status in (403, 404)


def test_expired_at_the_boundary_is_configurable() -> None:
    data = sign({"user": user_json(ADMIN), "auth_date": "1000"}, TOKEN)
    assert validate(data, TOKEN, now=1000 + 3600, max_age_s=3600).id == ADMIN
    with pytest.raises(InvalidInitData, match="expired"):
        validate(data, TOKEN, now=1000 + 3601, max_age_s=3600)
    assert datetime.fromtimestamp(1000, UTC) < datetime.now(UTC) - timedelta(days=1)


def test_the_openapi_file_describes_the_json_the_api_sends() -> None:
    """Each schema of openapi.yaml named after a model of bot/miniapp/schema.py lists exactly its fields."""
    import yaml

    from bot.miniapp import OPENAPI
    from bot.miniapp import schema as s

    doc = yaml.safe_load(OPENAPI.read_text())
    described = {name: set(spec.get("properties", {})) for name, spec in doc["components"]["schemas"].items()}
    models = {name: getattr(s, name) for name in described if isinstance(getattr(s, name, None), type)}
    assert {"Figures", "BotCard", "Overview", "TradeRow", "TradePage", "Confirmation", "ActionResult"} <= set(models)
    for name, model in models.items():
        assert described[name] == set(model.model_fields), name
    actions = next(p for p in doc["paths"]["/actions/{action}"]["post"]["parameters"] if p["name"] == "action")
    from bot.miniapp.api import ASKS

    assert set(actions["schema"]["enum"]) == set(ASKS)


async def test_the_menu_button_and_status_open_the_app_at_the_webhooks_host(h: Harness, tmp_path: Path,  # noqa: F811
                                                                            desk_url: str) -> None:  # noqa: F811
    """A webhook desk: its https host serves the app; the menu button and /status's button point there."""
    settings = _settings(tmp_path, desk_url, telegram_webhook_url="https://desk.example.com/telegram/webhook",
                         telegram_webhook_secret="s3cret-token")
    dp = build_dispatcher(h.desk, settings)
    await set_webhook(h.bot, settings, dp)
    [menu] = h.session.named("setChatMenuButton")
    assert menu.method.menu_button.web_app.url == "https://desk.example.com/app/"  # type: ignore[attr-defined]
    # without an https address of its own (polling, no PUBLIC_URL), no button at all
    h.session.clear()
    await _set_commands(h.bot, build_dispatcher(h.desk, _settings(tmp_path, desk_url))["app_url"])
    assert h.session.named("setChatMenuButton") == [] and h.session.named("setMyCommands")
    status = await commands.status(commands.Context(h.desk, Actor(ADMIN, "a", "admin"), Confirmations(),
                                                    extras={"app_url": "https://desk.example.com/app/"}))
    assert [b.web_app for row in status.buttons for b in row if b.web_app] == ["https://desk.example.com/app/"]
