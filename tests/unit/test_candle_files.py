"""Candle files: bad rows are refused with file, line and reason; good files round-trip exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storage.candle_files import BadCandleFile, parse_name, read_candle_file, write_candle_file
from tests.conftest import CANDLES

HEADER = "timestamp_ms,open,high,low,close,volume\n"
ROWS = ["1700000100000,10,11,9,10.5,100\n", "1700000400000,10.5,12,10,11,50\n", "1700000700000,11,11.5,10.5,11,0\n"]


def _write(tmp_path: Path, text: str, name: str = "ABC-USDT_5m_test.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("timestamp_ms,open,high,low,volume\n" + "1700000100000,1,2,0.5,3\n", 1, "missing column(s) close"),
    (HEADER + ROWS[0] + "1700000400000,10.5,abc,10,11,50\n", 3, "high is not a number: 'abc'"),
    (HEADER + ROWS[0] + "1700000400000,10.5,9,10,10,50\n", 3, "high < low"),
    (HEADER + ROWS[1] + ROWS[0], 3, "not after the previous line"),
    (HEADER + ROWS[0] + ROWS[0], 3, "not after the previous line"),
    (HEADER + "1700000100001,10,11,9,10.5,100\n", 2, "not aligned"),
    (HEADER + ROWS[0] + "1700000400000,10.5,12,10,,50\n", 3, "close is empty"),
    (HEADER + "1700000100000,-1,11,-2,10.5,100\n", 2, "positive"),
    (HEADER + "1700000100000,10,10.2,9,10.5,100\n", 2, "high is below open or close"),
])
def test_bad_rows_named_with_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(BadCandleFile) as err:
        read_candle_file(path)
    assert err.value.line == line
    assert reason in err.value.reason
    assert str(err.value).startswith(f"{path.name}:{line}: ")


def test_skip_bad_keeps_the_good_rows(tmp_path: Path) -> None:
    text = HEADER + ROWS[0] + "1700000400000,10.5,abc,10,11,50\n" + ROWS[2]
    series, bad = read_candle_file(_write(tmp_path, text), skip_bad=True)
    assert [b.line for b in bad] == [3]
    assert series.open_ms.tolist() == [1700000100000, 1700000700000]


def test_bad_names_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(BadCandleFile, match="file name"):
        read_candle_file(_write(tmp_path, HEADER, "candles.csv"))
    with pytest.raises(BadCandleFile, match="empty"):
        read_candle_file(_write(tmp_path, ""))
    with pytest.raises(BadCandleFile, match="unknown interval"):
        parse_name(Path("ABC-USDT_7m_x.csv"))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip_real_file(tmp_path: Path, fmt: str) -> None:
    src, _ = read_candle_file(CANDLES / "bybit_perp_2026-02" / "BTC-USDT_15m_bybit.csv")
    path = write_candle_file(src, tmp_path, fmt)
    assert path.name == f"BTC-USDT_15m_bybit.{fmt}"
    again, bad = read_candle_file(path)
    assert not bad and again.symbol == "BTCUSDT" and again.interval == "15"
    for field in ("open_ms", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(again, field), getattr(src, field)), field


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "BTC-USDT_15m_x.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BadCandleFile, match="Parquet"):
        read_candle_file(path)
