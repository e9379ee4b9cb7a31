"""Every recovery decision does what its button says — end to end: the real host process, trading live against
the fake Bybit (real pybit), operated through the fake Bot API.

Before the desk starts, the exchange and the ledger disagree on ten symbols (and an eleventh decision was
recorded by a process that crashed before acting on it). Reconciliation at start raises the items; an admin
presses one button per item; each press is checked at the boundary: the exchange's positions and orders,
the ledger's rows, the audit row naming who. A second press changes nothing; a restart between a close and
its fill changes nothing further (the fill closes the trade at its execution price); the next
reconciliation raises nothing for a decided state that has not changed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.config import BotConfig
from core.ledger import LedgerEvent, TradeRecord
from storage.bots import upsert_bot
from storage.db import create_engine, session_factory
from storage.journal import Journal
from storage.ledger import SqlLedger
from storage.models import RecoveryItem
from tests.fakes.bybit import FakeBybit
from tests.fakes.telegram import TOKEN, FakeBotAPI, Sent
from tests.hostproc import DeskProcess, desk_env, run

ADMIN = 111
BOT = "live"
PRICES = {"BTCUSDT": "100000", "ETHUSDT": "3000", "SOLUSDT": "150", "DOGEUSDT": "0.2", "XRPUSDT": "0.5",
          "BNBUSDT": "600", "ADAUSDT": "0.4", "LTCUSDT": "80", "LINKUSDT": "15", "AVAXUSDT": "30", "OPUSDT": "1.5"}
EXTRA_INSTRUMENTS = {"ADAUSDT": ("0.0001", "1", "1"), "LTCUSDT": ("0.01", "0.1", "0.1"),
                     "LINKUSDT": ("0.001", "0.1", "0.1"), "AVAXUSDT": ("0.001", "0.1", "0.1"),
                     "OPUSDT": ("0.0001", "0.1", "0.1")}
# the ledger's open trades: (symbol, qty); the exchange holds a different size or nothing
DESK_TRADES = {"XRPUSDT": "100", "BNBUSDT": "1", "ADAUSDT": "200", "LTCUSDT": "1", "LINKUSDT": "5", "AVAXUSDT": "3"}


@pytest.fixture
def fake() -> Iterator[FakeBybit]:
    with FakeBybit(lambda: datetime.now(UTC)) as server:
        for symbol, (tick, step, minimum) in EXTRA_INSTRUMENTS.items():
            server.set_instrument(symbol, tick, step, minimum)
        for symbol, price in PRICES.items():
            server.set_price(symbol, price)
        server.set_wallet_balance("1000000")
        yield server


@pytest.fixture
def api() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as server:
        yield server


def _db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "phantomdesk.db"


def _rows(tmp_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(_db(tmp_path), timeout=10) as conn:
        return conn.execute(sql, args).fetchall()


def _trade(tmp_path: Path, trade_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(_db(tmp_path), timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM trades WHERE id = ?", (trade_id,)).fetchone()
        return dict(row) if row else None


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))  # SQLite hands Numeric back as float


def _item(tmp_path: Path, symbol: str, kind: str) -> int:
    rows = _rows(tmp_path, "SELECT id, details FROM recovery_items WHERE kind = ? ORDER BY id", kind)
    return next(i for i, details in rows if f'"symbol": "{symbol}"' in details)


def _place(fake: FakeBybit, symbol: str, side: str, qty: str, **levels: str) -> None:
    fake.place_directly({"symbol": symbol, "side": side, "orderType": "Market", "qty": qty, **levels})


def _prepare(tmp_path: Path, fake: FakeBybit) -> int:
    """The divergences, as a desk that was down would find them; returns the id of the crashed decision."""
    # positions nobody on the desk opened
    _place(fake, "BTCUSDT", "Buy", "0.01", stopLoss="95000", takeProfit="105000")  # -> adopt
    _place(fake, "ETHUSDT", "Sell", "1")  # -> close at market (and a restart before its fill is heard)
    _place(fake, "SOLUSDT", "Buy", "10")  # -> ignore
    _place(fake, "DOGEUSDT", "Buy", "1000")  # -> adopt without a stop-loss, then close it
    _place(fake, "OPUSDT", "Buy", "10")  # -> decided close_at_market by a process that crashed before acting
    # the ledger's trades: the exchange holds half (XRP, ADA), double (BNB) or nothing (LTC, LINK, AVAX)
    _place(fake, "XRPUSDT", "Buy", "50")
    _place(fake, "BNBUSDT", "Buy", "2")
    _place(fake, "ADAUSDT", "Buy", "100")
    _place(fake, "LTCUSDT", "Buy", "1")  # LTC traded and flat again: its last execution is the close at 82
    fake.set_price("LTCUSDT", "82")
    fake.place_directly({"symbol": "LTCUSDT", "side": "Sell", "orderType": "Market", "qty": "1", "reduceOnly": True})
    return asyncio.run(_ledger(tmp_path))


async def _ledger(tmp_path: Path) -> int:
    engine = create_engine(f"sqlite+aiosqlite:///{_db(tmp_path)}")
    try:
        config = BotConfig(id=BOT, symbols=list(PRICES), mode="live", max_positions=20)
        async with session_factory(engine).begin() as session:
            await upsert_bot(session, config)
        ledger = SqlLedger(engine, Journal(tmp_path / "unused.jsonl"))
        entered = datetime.now(UTC)  # after LTC's executions: none of them closes this trade
        for n, (symbol, qty) in enumerate(DESK_TRADES.items()):
            price = Decimal(PRICES[symbol])
            trade = TradeRecord(f"t-desk{n}", BOT, f"desk{n}", symbol, "trend_pullback", "long", "open", "live",
                                Decimal(qty), Decimal(5), price, entered, price * Decimal("0.9"),
                                price * Decimal("1.1"))
            assert await ledger.record(LedgerEvent("open", trade)) == "db"
        # a decision recorded, then the process died before performing it
        async with session_factory(engine).begin() as session:
            item = RecoveryItem(bot_id=BOT, kind="unknown_position", critical=True,
                                dedupe_key=f"unknown_position:{BOT}:OPUSDT:long:10:1.5",
                                details={"symbol": "OPUSDT", "side": "long", "qty": "10", "entry_price": "1.5",
                                         "stop_loss": None, "take_profit": None},
                                options=["adopt", "close_at_market", "ignore"], status="approved",
                                decision="close_at_market", decided_by=ADMIN, effect={"state": "acting"},
                                created_at=entered, expires_at=entered + timedelta(days=1), decided_at=entered)
            session.add(item)
            await session.flush()
            return int(item.id)
    finally:
        await engine.dispose()


def _press(api: FakeBotAPI, listing: dict[int, Sent], item_id: int, option: str) -> tuple[str, Sent]:
    """Press the item's button (as listed by /recovery); (the answer, the edited message)."""
    message = listing[item_id]
    data = f"rv:{item_id}:{option}"
    assert data in message.callback_data, f"no {option!r} button on item {item_id}: {message.callback_data}"
    edits_before = len([s for s in api.sent if s.method == "editMessageText"])
    callback = api.press(ADMIN, data, message)
    answer = api.wait_for(lambda: api.answers(callback), 30, f"the answer to {data}")[0]
    edit = api.wait_for(lambda: [s for s in api.sent if s.method == "editMessageText"][edits_before:], 30,
                        f"the edit after {data}")[0]
    return str(answer.params.get("text")), edit


def _listing(api: FakeBotAPI, expected: int) -> dict[int, Sent]:
    before = len(api.to(ADMIN))
    api.send_text(ADMIN, "/recovery")
    replies = api.wait_for(lambda: [s for s in api.to(ADMIN)[before:] if "recovery #" in s.text]
                           if len([s for s in api.to(ADMIN)[before:] if "recovery #" in s.text]) >= expected
                           else None, 30, f"{expected} recovery items listed")
    return {int(s.text.split("recovery #")[1].split("<")[0].split()[0]): s for s in replies}


def _effects(tmp_path: Path, item_id: int) -> list[tuple[str, str]]:
    rows = _rows(tmp_path, "SELECT actor, details FROM audit_log WHERE action LIKE 'recovery_effect:%' "
                           "AND details LIKE ?", f'%"item": {item_id},%')
    return [(actor, details) for actor, details in rows]


def test_every_recovery_option_has_its_effect(tmp_path: Path, fake: FakeBybit, api: FakeBotAPI) -> None:
    env = desk_env(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_SERVER=api.url, TELEGRAM_ADMIN_IDS=str(ADMIN),
                   TRADING_MODE="live", LIVE_TRADING_CONFIRM="yes", BYBIT_API_KEY="pdTestKey0123456789",
                   BYBIT_API_SECRET="pdTestSecret-abcdefghijklmnopqrstuv", BYBIT_REST_URL=fake.url,
                   BYBIT_PRIVATE_WS_URL=fake.private_ws_url, MARKET_FEED="replay", FEED_DATA=str(tmp_path / "no"),
                   DEFAULT_SYMBOLS="BTCUSDT")
    (tmp_path / "no").mkdir()
    assert run(["migrate"], tmp_path, env).returncode == 0
    crashed = _prepare(tmp_path, fake)
    desk = DeskProcess(tmp_path, env).start()
    try:
        desk.wait_healthy()
        # the crashed decision is finished at start: one close, under the item's own link id
        api.wait_for(lambda: fake.position("OPUSDT") is None, 30, "the crashed decision to be performed")
        assert len(fake.creates(f"pd-rv{crashed}-c")) == 1
        api.wait_for(lambda: (_trade(tmp_path, f"t-rv{crashed}") or {}).get("status") == "closed", 30, "OP closed")
        assert _trade(tmp_path, f"t-rv{crashed}")["exit_reason"] == "manual"  # type: ignore[index]

        # reconciliation at start raised one item per divergence, each once
        api.wait_for(lambda: _rows(tmp_path, "SELECT count(*) FROM recovery_items WHERE status = 'pending'")[0][0]
                     == 10, 30, "ten pending items")
        listing = _listing(api, 10)
        assert all(not any(d.endswith(":reject") for d in s.callback_data) for s in listing.values())

        # unknown_position / adopt: the exchange's position becomes a trade, with its own SL/TP
        btc = _item(tmp_path, "BTCUSDT", "unknown_position")
        answer, edit = _press(api, listing, btc, "adopt")
        assert answer == "adopt: done"
        trade = _trade(tmp_path, f"t-rv{btc}")
        assert trade is not None and trade["status"] == "open" and _dec(trade["qty"]) == Decimal("0.01")
        assert (_dec(trade["stop_loss"]), _dec(trade["take_profit"])) == (Decimal(95000), Decimal(105000))
        assert fake.position("BTCUSDT") is not None  # still held: now by the desk
        assert f"t-rv{btc}" in edit.text
        assert [a for a, _ in _effects(tmp_path, btc)] == [f"tg:{ADMIN}"]

        # a second press (the old message's other button) changes nothing
        answer, _ = _press_again(api, listing, btc, "close_at_market")
        assert answer.startswith("already decided")
        assert fake.position("BTCUSDT") is not None and not fake.creates(f"pd-rv{btc}-c")

        # unknown_position / adopt without a stop-loss: said plainly, with a "close at market" decision
        doge = _item(tmp_path, "DOGEUSDT", "unknown_position")
        answer, edit = _press(api, listing, doge, "adopt")
        assert "NO stop-loss" in edit.text and "decision needed" in edit.text
        follow = next(int(d.split(":")[1]) for d in edit.callback_data if d.endswith(":close_at_market"))
        assert _trade(tmp_path, f"t-rv{doge}")["stop_loss"] is None  # type: ignore[index]  # none invented
        answer, _ = _press(api, {follow: edit}, follow, "close_at_market")
        api.wait_for(lambda: fake.position("DOGEUSDT") is None, 30, "DOGE closed at the exchange")
        api.wait_for(lambda: (_trade(tmp_path, f"t-rv{doge}") or {}).get("status") == "closed", 30, "DOGE trade")
        assert _trade(tmp_path, f"t-rv{doge}")["exit_reason"] == "manual"  # type: ignore[index]
        assert len(fake.creates(f"pd-rv{follow}-c")) == 1

        # unknown_position / ignore: nothing changes
        sol = _item(tmp_path, "SOLUSDT", "unknown_position")
        assert _press(api, listing, sol, "ignore")[0] == "ignore: nothing"
        assert fake.position("SOLUSDT") is not None and _trade(tmp_path, f"t-rv{sol}") is None

        # size_mismatch / adopt_exchange_size: the trade's qty becomes the exchange's
        xrp = _item(tmp_path, "XRPUSDT", "size_mismatch")
        assert _press(api, listing, xrp, "adopt_exchange_size")[0] == "adopt exchange size: done"
        assert _dec(_trade(tmp_path, "t-desk0")["qty"]) == Decimal(50)  # type: ignore[index]
        assert Decimal(fake.position("XRPUSDT")["size"]) == Decimal(50)  # type: ignore[index]

        # size_mismatch / close_at_market: a reduce-only close of the exchange's size; its fill closes the trade
        bnb = _item(tmp_path, "BNBUSDT", "size_mismatch")
        assert _press(api, listing, bnb, "close_at_market")[0] == "close at market: sent"
        api.wait_for(lambda: (_trade(tmp_path, "t-desk1") or {}).get("status") == "closed", 30, "BNB closed")
        bnb_trade = _trade(tmp_path, "t-desk1")
        assert fake.position("BNBUSDT") is None and _dec(bnb_trade["qty"]) == Decimal(2)  # type: ignore[index]
        assert bnb_trade["exit_reason"] == "manual"  # type: ignore[index]
        [close] = fake.creates(f"pd-rv{bnb}-c")
        assert close.body["reduceOnly"] is True and Decimal(close.body["qty"]) == 2

        # size_mismatch / ignore
        ada = _item(tmp_path, "ADAUSDT", "size_mismatch")
        assert _press(api, listing, ada, "ignore")[0] == "ignore: nothing"
        assert _dec(_trade(tmp_path, "t-desk2")["qty"]) == Decimal(200)  # type: ignore[index]

        # trade_without_position / mark_closed: at the last execution on the symbol...
        ltc = _item(tmp_path, "LTCUSDT", "trade_without_position")
        assert _press(api, listing, ltc, "mark_closed")[0] == "mark closed: done"
        ltc_trade = _trade(tmp_path, "t-desk3")
        assert ltc_trade is not None and ltc_trade["status"] == "closed"
        assert ltc_trade["exit_reason"] == "reconciled_manual" and _dec(ltc_trade["exit_price"]) == Decimal(82)
        assert not ltc_trade["exit_estimated"]
        # ... or, with none, at the last price, labelled an estimate
        fake.set_price("LINKUSDT", "16")
        link = _item(tmp_path, "LINKUSDT", "trade_without_position")
        _, edit = _press(api, listing, link, "mark_closed")
        link_trade = _trade(tmp_path, "t-desk4")
        assert link_trade is not None and _dec(link_trade["exit_price"]) == Decimal(16)
        assert link_trade["exit_estimated"] and "ESTIMATE" in edit.text

        # trade_without_position / ignore
        avax = _item(tmp_path, "AVAXUSDT", "trade_without_position")
        assert _press(api, listing, avax, "ignore")[0] == "ignore: nothing"
        assert _trade(tmp_path, "t-desk5")["status"] == "open"  # type: ignore[index]

        # unknown_position / close_at_market, and the desk stops before it hears the fill
        fake.go_silent(True, private=True)
        eth = _item(tmp_path, "ETHUSDT", "unknown_position")
        assert _press(api, listing, eth, "close_at_market")[0] == "close at market: sent"
        assert fake.position("ETHUSDT") is None
        assert _trade(tmp_path, f"t-rv{eth}")["status"] == "open"  # type: ignore[index]  # the fill is unheard

        audit = _rows(tmp_path, "SELECT actor FROM audit_log WHERE action LIKE 'recovery_effect:%'")
        assert {a for (a,) in audit} == {"system", f"tg:{ADMIN}"}  # the crashed decision was finished by the desk
        code, _ = desk.terminate(timeout=15)
        assert code == 0, desk.output[-3000:]
    finally:
        desk.kill()

    fake.go_silent(False, private=True)
    desk = DeskProcess(tmp_path, env).start()
    try:
        desk.wait_healthy()
        # the restart's reconciliation finds the close's fill: the trade closes at its execution price
        api.wait_for(lambda: (_trade(tmp_path, f"t-rv{eth}") or {}).get("status") == "closed", 30, "ETH closed")
        eth_trade = _trade(tmp_path, f"t-rv{eth}")
        [execution] = fake.execution_rows(order_link_id=f"pd-rv{eth}-c")
        assert eth_trade["exit_reason"] == "manual"  # type: ignore[index]
        assert _dec(eth_trade["exit_price"]) == _dec(execution["execPrice"])  # type: ignore[index]
        assert len(fake.creates(f"pd-rv{eth}-c")) == 1  # sent once across the restart
        # nothing decided is raised again: SOL and ADA and AVAX were ignored in this very state
        assert _rows(tmp_path, "SELECT count(*) FROM recovery_items WHERE status = 'pending'")[0][0] == 0
        assert _rows(tmp_path, "SELECT count(*) FROM recovery_items")[0][0] == 12  # 10 + OP's + DOGE's stop
        open_trades = {s for (s,) in _rows(tmp_path, "SELECT symbol FROM trades WHERE status = 'open'")}
        assert open_trades == {"BTCUSDT", "XRPUSDT", "ADAUSDT", "AVAXUSDT"}
        code, _ = desk.terminate(timeout=15)
        assert code == 0, desk.output[-3000:]
    finally:
        desk.kill()


def _press_again(api: FakeBotAPI, listing: dict[int, Sent], item_id: int, option: str) -> tuple[str, None]:
    callback = api.press(ADMIN, f"rv:{item_id}:{option}", listing[item_id])
    return str(api.wait_for(lambda: api.answers(callback), 30, "the answer")[0].params.get("text")), None
