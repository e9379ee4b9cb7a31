"""Bad input, generated: every parser at the desk's edges either accepts a value that satisfies its
invariants or refuses it with its own clear error — never another exception, never a silent change."""

from __future__ import annotations

import contextlib
import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.settings import SettingsError, load_settings
from core.config import BotConfig
from core.exchange.bybit_private import BadMessage as PrivateBadMessage
from core.exchange.bybit_private import parse_execution, parse_order, parse_position
from core.market.bybit_feed import BadMessage, parse_kline, parse_rest_row
from storage.candle_files import BadCandleFile, read_candle_file
from storage.journal import Journal, decode, encode

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FILE_FUZZ = settings(FUZZ, max_examples=40)  # each example writes and parses a file

json_scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(
    max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)
numeric_text = st.one_of(st.from_regex(r"-?[0-9]{1,7}(\.[0-9]{1,6})?", fullmatch=True), st.text(max_size=6),
                         st.sampled_from(["", "nan", "inf", "1e309", "0", "-1", "99999999999999999999"]),
                         st.integers(-10**20, 10**20).map(str))


# --- the local journal -------------------------------------------------------------------------------------
@FUZZ
@given(doc=st.dictionaries(st.text(max_size=10), json_values.filter(lambda v: v == v), max_size=6),
       position=st.integers(0, 10_000), char=st.characters(codec="utf-8"))
def test_journal_line_mutation_is_detected(doc: dict[str, Any], position: int, char: str) -> None:
    try:
        line = encode(doc)
    except ValueError:  # NaN inside: not JSON
        return
    assert decode(line) == json.loads(json.dumps(doc))
    i = position % (len(line) - 1)  # keep the newline
    mutated = line[:i] + char + line[i + 1:]
    assume(mutated != line)
    try:
        again = decode(mutated)
    except (ValueError, json.JSONDecodeError):
        return  # refused, as it must be
    assert again == json.loads(json.dumps(doc))  # only a mutation that changes nothing may pass


@FILE_FUZZ
@given(lines=st.lists(st.text(max_size=60), max_size=8))
def test_journal_reads_garbage_without_losing_it(tmp_path_factory: pytest.TempPathFactory, lines: list[str]) -> None:
    path = tmp_path_factory.mktemp("j") / "ledger.jsonl"
    good = {"kind": "open", "n": 1}
    path.write_bytes((encode(good) + "".join(line.replace("\n", " ") + "\n" for line in lines)).encode())
    journal = Journal(path)
    records, bad = journal.read()
    assert records[0] == (1, good)
    assert len(records) + len(bad) == 1 + sum(1 for line in lines if line.strip())  # every line accounted for
    journal.set_aside(bad)
    if bad:
        kept = [json.loads(x) for x in journal.corrupt_path.read_text().splitlines()]
        assert [k["line"] for k in kept] == [b.line for b in bad]


# --- candle files --------------------------------------------------------------------------------------------
@FILE_FUZZ
@given(rows=st.lists(st.tuples(numeric_text, numeric_text, numeric_text, numeric_text, numeric_text, numeric_text),
                     min_size=1, max_size=12),
       header=st.sampled_from(["timestamp_ms,open,high,low,close,volume", "timestamp_ms,open,high,close,volume",
                               "ts,open,high,low,close,volume"]))
def test_candle_file_rows(tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, ...]], header: str) -> None:
    path = tmp_path_factory.mktemp("c") / "ABC-USDT_5m_test.csv"
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    try:
        series, bad = read_candle_file(path)
    except BadCandleFile as exc:
        if exc.line is None:  # only a file the CSV tokenizer cannot read at all has no line to name
            assert exc.reason.startswith("not a readable CSV file")
            return
        assert 1 <= exc.line <= len(rows) + 1
        assert str(exc).startswith(f"{path.name}:{exc.line}: ")
        return
    assert not bad and len(series) == len(rows)
    assert (series.high >= series.low).all() and (series.low > 0).all()
    assert (series.open_ms[1:] > series.open_ms[:-1]).all() and (series.open_ms % 300_000 == 0).all()


# --- exchange messages ---------------------------------------------------------------------------------------
kline_entry = st.fixed_dictionaries({}, optional={
    "start": st.integers(0, 2 * 10**12) | st.text(max_size=5), "open": numeric_text, "high": numeric_text,
    "low": numeric_text, "close": numeric_text, "volume": numeric_text, "turnover": numeric_text,
    "confirm": st.booleans() | st.none() | st.text(max_size=3), "interval": st.text(max_size=3)})


@FUZZ
@given(topic=st.sampled_from(["kline.15.BTCUSDT", "kline.3.ETHUSDT", "kline.7.X", "orderbook.1.BTCUSDT", ""]),
       entry=kline_entry | json_values)
def test_kline_messages(topic: str, entry: Any) -> None:
    try:
        candle = parse_kline(topic, entry)
    except BadMessage as exc:
        assert exc.kind
        return
    if candle is not None:
        assert candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high
        assert candle.symbol and candle.interval


@FUZZ
@given(row=st.lists(numeric_text | st.integers(), max_size=8) | json_values)
def test_rest_kline_rows(row: Any) -> None:
    try:
        candle = parse_rest_row("BTCUSDT", "15", row)
    except BadMessage:
        return
    assert candle.high >= candle.low > 0


private_row = st.dictionaries(st.sampled_from([
    "symbol", "side", "orderId", "orderLinkId", "orderStatus", "qty", "cumExecQty", "avgPrice", "execId", "execPrice",
    "execQty", "execFee", "execTime", "seq", "size", "avgPrice", "positionValue", "leverage", "stopLoss", "takeProfit",
    "createdTime", "updatedTime", "reduceOnly", "stopOrderType", "cumExecFee", "orderType", "category"]),
    numeric_text | st.sampled_from(["Buy", "Sell", "BTCUSDT", "Filled", "New", "linear", "TakeProfit"]) | st.booleans(),
    max_size=20)


@FUZZ
@given(row=private_row | json_values)
def test_private_messages(row: Any) -> None:
    for parse in (parse_order, parse_execution, parse_position):
        with contextlib.suppress(PrivateBadMessage):
            parse(row)


# --- bot configuration files ---------------------------------------------------------------------------------
@FUZZ
@given(doc=st.fixed_dictionaries({"id": st.text(max_size=10)}, optional={
    "symbols": st.lists(st.text(string.ascii_uppercase, max_size=9), max_size=3) | json_values,
    "risk_pct": st.floats(allow_nan=True) | st.text(max_size=4), "max_leverage": st.integers(-5, 200),
    "strategies": st.dictionaries(st.sampled_from(["trend_pullback", "scalp", "moon"]), st.dictionaries(
        st.sampled_from(["reward_risk", "enabled", "cooldown_candles", "x"]), json_values, max_size=2), max_size=2),
    "slow_interval": st.sampled_from(["15", "5", "1h", "7m"]), "fast_interval": st.sampled_from(["3", "15", "x"]),
    "mode": st.text(max_size=5)}))
def test_bot_config_files(doc: dict[str, Any]) -> None:
    try:
        config = BotConfig.model_validate(doc)
    except ValidationError as exc:
        for error in exc.errors():
            assert error["loc"] or error["msg"]  # every refusal names where
        return
    assert config.symbols and all(s.endswith(("USDT", "USDC")) for s in config.symbols)
    assert config.risk_pct is None or 0 < config.risk_pct <= 10


# --- environment values --------------------------------------------------------------------------------------
# secrets carry a marker no other generated value can contain, so finding it means a secret leaked
SECRETY = st.text(string.ascii_letters + string.digits + ":_-", min_size=8, max_size=50).map(lambda t: "Zq!" + t)


@FUZZ
@given(env=st.fixed_dictionaries({}, optional={
    "PORT": st.text(max_size=6), "TRADING_MODE": st.text(max_size=6), "LOG_LEVEL": st.text(max_size=8),
    "TELEGRAM_ADMIN_IDS": st.text(max_size=12), "DATABASE_URL": st.text(max_size=30),
    "TELEGRAM_BOT_TOKEN": SECRETY, "BYBIT_API_SECRET": SECRETY, "SECRET_KEY": SECRETY,
    "DAILY_REPORT_UTC": st.text(max_size=6), "DEFAULT_SYMBOLS": st.text(max_size=12)}))
def test_environment_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str]) -> None:
    monkeypatch.chdir(tmp_path)
    for key in ("DATABASE_URL", "TRADING_MODE", "PORT", "LOG_LEVEL", "TELEGRAM_ADMIN_IDS", "TELEGRAM_BOT_TOKEN",
                "BYBIT_API_SECRET", "SECRET_KEY", "DAILY_REPORT_UTC", "DEFAULT_SYMBOLS", "BYBIT_API_KEY",
                "LIVE_TRADING_CONFIRM", "MARKET_FEED"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if "\x00" in value:
            return  # the OS refuses NUL in the environment
        monkeypatch.setenv(key, value)
    try:
        load_settings()
    except SettingsError as exc:
        message = str(exc)
        assert "\n" not in message and ":" in message
        for key in ("TELEGRAM_BOT_TOKEN", "BYBIT_API_SECRET", "SECRET_KEY"):
            if key in env and len(env[key]) >= 8:
                assert env[key] not in message  # a refused secret is never echoed
