"""Bad input, generated: every parser at the desk's edges either accepts a value that satisfies its
invariants or refuses it with its own clear error — never another exception, never a silent change."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.settings import SettingsError, load_settings
from core.config import BotConfig
from core.exchange.bybit_private import BadMessage as PrivateBadMessage
from core.exchange.bybit_private import parse_execution, parse_order, parse_position
from core.market import bybit_feed as feed_module
from core.market.bybit_feed import BadMessage, BybitFeed, RefusedCandle, parse_kline, parse_rest_row
from core.market.candle import INTERVAL_MS, Candle, dt_to_ms
from core.market.indicators import Indicators
from core.market.sanity import MAX_PRICE, MAX_VOLUME, MIN_PRICE, first_refusals, refusal
from core.market.state import MarketState
from core.strategies.features import compute_features
from core.strategies.regime import Regime
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
# absurd but parseable: what an exchange or a file could say that no market ever did
wild_floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [1e308, -1e308, 1e160, 2e17, 1e15, 1e9, 1.5e9, 1e-300, 5e-324, 1e-11, 0.0, -0.0, -1.0, math.nan, math.inf])
wild_number = numeric_text | wild_floats | wild_floats.map(repr)


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
        # a generated cell may hold a line break: lines are the file's, not the rows'
        assert 1 <= exc.line <= len(path.read_text().splitlines()) + 1
        assert str(exc).startswith(f"{path.name}:{exc.line}: ")
        return
    assert not bad and len(series) == len(rows)
    assert (series.high >= series.low).all() and (series.low > 0).all()
    assert (series.open_ms[1:] > series.open_ms[:-1]).all() and (series.open_ms % 300_000 == 0).all()
    assert_sane(series.open_ms, series.interval, series.open, series.high, series.low, series.close, series.volume)


def assert_sane(open_ms: Any, interval: str, *columns: Any, now: datetime | None = None) -> None:
    """What passed a boundary is a sane candle, checked by the rule and by its plain meaning."""
    assert first_refusals(open_ms, interval, *columns, None, now) == [None] * len(open_ms)
    o, h, lo, c, v = (list(map(float, col)) for col in columns)
    for i in range(len(o)):
        assert all(math.isfinite(x) for x in (o[i], h[i], lo[i], c[i], v[i]))
        assert MIN_PRICE <= lo[i] <= min(o[i], c[i]) <= max(o[i], c[i]) <= h[i] <= MAX_PRICE
        assert 0 <= v[i] <= MAX_VOLUME


cell = st.from_regex(r"-?[0-9]{1,7}(\.[0-9]{1,6})?", fullmatch=True) | wild_floats.map(repr) | st.sampled_from(
    ["", "nan", "inf", "1e309", "abc", "99999999999999999999"])  # one CSV cell: no separators or line breaks
row_numbers = st.tuples(*(cell for _ in range(5)))


@FILE_FUZZ
@given(rows=st.lists(row_numbers, min_size=1, max_size=12), start=st.integers(0, 10**7))
def test_candle_file_absurd_values(tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, ...]],
                                   start: int) -> None:
    path = tmp_path_factory.mktemp("c") / "ABC-USDT_5m_test.csv"
    lines = [f"{(start + i) * 300_000},{','.join(r)}" for i, r in enumerate(rows)]
    path.write_text("timestamp_ms,open,high,low,close,volume\n" + "".join(line + "\n" for line in lines))
    series, bad = read_candle_file(path, skip_bad=True)
    assert len(series) + len(bad) == len(rows)  # every line is either a sane candle or named with its reason
    assert all(2 <= b.line <= len(rows) + 1 and b.reason for b in bad)
    assert_sane(series.open_ms, series.interval, series.open, series.high, series.low, series.close, series.volume)


# --- exchange messages ---------------------------------------------------------------------------------------
kline_entry = st.fixed_dictionaries({}, optional={
    "start": st.integers(0, 2 * 10**12) | st.text(max_size=5), "open": numeric_text, "high": numeric_text,
    "low": numeric_text, "close": numeric_text, "volume": numeric_text, "turnover": numeric_text,
    "confirm": st.booleans() | st.none() | st.text(max_size=3), "interval": st.text(max_size=3)})


NOW = datetime(2025, 1, 6, 12, tzinfo=UTC)


def wild_kline(starts: st.SearchStrategy[int]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "start": starts, "open": wild_number, "high": wild_number, "low": wild_number, "close": wild_number,
        "volume": wild_number, "turnover": wild_number, "confirm": st.just(True)})


# 15m candles around NOW: recent ones, the open one, the next, a week ahead, far in the future
near_now = st.sampled_from([-40, -3, -2, -1, 0, 1, 672, 10**6]).map(lambda k: dt_to_ms(NOW) + k * 900_000)
wild_entry = wild_kline(near_now | st.integers(0, 2 * 10**12))


def assert_sane_candle(candle: Candle, now: datetime | None) -> None:
    assert refusal(candle, now) is None and candle.symbol and candle.interval
    col = np.array  # the rule works on columns
    assert_sane(col([candle.open_ms], dtype=np.int64), candle.interval,
                *(col([x], dtype=np.float64) for x in (candle.open, candle.high, candle.low, candle.close,
                                                        candle.volume)), now=now)


@FUZZ
@given(topic=st.sampled_from(["kline.15.BTCUSDT", "kline.3.ETHUSDT", "kline.7.X", "orderbook.1.BTCUSDT", ""]),
       entry=kline_entry | wild_entry | json_values, now=st.none() | st.just(NOW))
def test_kline_messages(topic: str, entry: Any, now: datetime | None) -> None:
    try:
        candle = parse_kline(topic, entry, now=now)
    except RefusedCandle as exc:
        assert refusal(exc.candle, now) is exc.reason
        return
    except BadMessage as exc:
        assert exc.kind
        return
    if candle is not None:
        assert_sane_candle(candle, now)


@FUZZ
@given(row=st.lists(numeric_text | wild_number | st.integers(), max_size=8) | json_values)
def test_rest_kline_rows(row: Any) -> None:
    try:
        candle = parse_rest_row("BTCUSDT", "15", row)
    except BadMessage:
        return
    assert_sane_candle(candle, None)


class _Rest:
    """Stands in for the feed's KlineClient: the (fuzzed) rows for any window reaching the last 50 candles,
    and nothing older (the symbol's listing), so a walk back in time ends."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def get_kline(self, *_args: Any, end_ms: int, **_options: Any) -> tuple[list[Any], int | None]:
        return (self.rows if end_ms >= dt_to_ms(NOW) - 50 * 900_000 else []), None

    def close(self) -> None:
        pass


async def _through_the_feed(messages: list[Any], rest_rows: list[Any], history: int) -> tuple[BybitFeed, list[Candle]]:
    feed = BybitFeed(["BTCUSDT"], ("15",), clock=lambda: NOW, ws_url="ws://127.0.0.1:9", rest_url="http://127.0.0.1:9")
    feed._rest = _Rest(rest_rows)  # type: ignore[assignment]
    got = await feed.history("BTCUSDT", "15", history) if history else []
    feed._started = True  # no sockets: the test hands messages to the stream as pybit's callback would
    for message in messages:
        feed._queue.put_nowait((0, None, message))
    feed._queue.put_nowait(feed_module._STOP)
    got += [c async for c in feed.stream()]
    await feed.close()
    return feed, got


@FUZZ
@given(entries=st.lists(wild_kline(near_now), max_size=6),  # near NOW: a hole to fill stays a few REST pages
       rest=st.lists(st.tuples(st.integers(-40, 2).map(lambda k: str(dt_to_ms(NOW) + k * 900_000)),
                               *(wild_number for _ in range(6))).map(list), max_size=6),
       history=st.sampled_from([0, 5]))
def test_the_feed_lets_only_sane_candles_through(entries: list[Any], rest: list[Any], history: int) -> None:
    """Arbitrary klines and REST rows never raise out of the feed, and only sane, closed, ordered candles
    come out of it (so none of the rest can reach the engine); what it refused is counted."""
    messages = [{"topic": "kline.15.BTCUSDT", "data": [e]} for e in entries]
    feed, got = asyncio.run(_through_the_feed(messages, rest, history))
    for candle in got:
        assert_sane_candle(candle, NOW)
        assert candle.open_ms + INTERVAL_MS["15"] <= dt_to_ms(NOW + timedelta(seconds=30))
    assert all(a.open_time < b.open_time for a, b in itertools.pairwise(got))
    refused_here = 0
    for e in entries:
        with contextlib.suppress(BadMessage):
            try:
                parse_kline("kline.15.BTCUSDT", e, now=NOW)
            except RefusedCandle:
                refused_here += 1
    assert sum(feed.refused.values()) >= refused_here  # every refused push is counted (REST rows add more)
    assert "handler_error" not in feed.errors
    state = MarketState()
    for candle in got:  # and what came out is food the indicators digest
        state.update(candle)


# --- the indicators and features, with whatever finite numbers get past everything -------------------------
finite = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1e308, -1e308, 1e160, 5e-324, 0.0])


@FUZZ
@given(bars=st.lists(st.tuples(finite, finite, finite, finite, finite), min_size=1, max_size=45))
def test_indicators_and_features_never_raise(bars: list[tuple[float, float, float, float, float]]) -> None:
    """No OverflowError, ZeroDivisionError or NaN reaches a signal, whatever finite candle gets in."""
    state = MarketState()
    ind = Indicators()
    for i, (o, h, lo, c, v) in enumerate(bars):
        candle = Candle("XUSDT", "15", NOW + timedelta(minutes=15 * i), o, h, lo, c, v)
        ind.update(candle.open_ms, h, lo, c, v)
        update = state.update(candle)
        assert update.series is not None
        features = compute_features(update.series, update.series, Regime(0, False, False, 0.5, 0), side="long",
                                    entry=1.0, stop=0.5, target=2.0, close_ms=candle.open_ms + 900_000,
                                    win_rate=0.5, outcomes=3)
        assert all(math.isfinite(x) for x in features.values())


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
