"""`python -m bot candles import|export|backfill` as real subprocesses, on the embedded SQLite database."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.market.candle import INTERVAL_MS, Candle, ms_to_dt
from storage.candle_files import read_candle_file
from tests.conftest import CANDLES
from tests.fakes.bybit import FakeBybit
from tests.hostproc import desk_env, run

BYBIT = CANDLES / "bybit_perp_2026-02"
BTC = BYBIT / "BTC-USDT_15m_bybit.csv"
HEADER = "timestamp_ms,open,high,low,close,volume"
GOOD = ["1770539400000,70159.1,70766.5,70021.3,70320,2800.256",
        "1770540300000,70320,70679.8,70245.7,70622.9,1037.294",
        "1770541200000,70622.9,70700,70500.5,70600,900.5",
        "1770542100000,70600,70650,70400,70450.25,1200"]


@pytest.fixture
def desk(tmp_path: Path) -> Path:
    """A working directory with a migrated embedded database (var/phantomdesk.db)."""
    done = run(["migrate"], tmp_path, desk_env())
    assert done.returncode == 0, done.stderr
    return tmp_path


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(["candles", *args], cwd, desk_env(**env))


def rows(cwd: Path) -> list[tuple]:
    with sqlite3.connect(cwd / "var" / "phantomdesk.db") as db:
        return db.execute("SELECT symbol, interval, open_time, open, high, low, close, volume, turnover "
                          "FROM candles ORDER BY symbol, interval, open_time").fetchall()


def count(cwd: Path, symbol: str | None = None) -> int:
    with sqlite3.connect(cwd / "var" / "phantomdesk.db") as db:
        if symbol is None:
            return db.execute("SELECT count(*) FROM candles").fetchone()[0]
        return db.execute("SELECT count(*) FROM candles WHERE symbol = ?", (symbol,)).fetchone()[0]


def write(folder: Path, name: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_import_real_folder(desk: Path) -> None:
    done = cli(desk, "import", str(BYBIT))
    assert done.returncode == 0, done.stderr
    expected = len(read_candle_file(BTC)[0])
    assert count(desk) == count(desk, "BTCUSDT") == expected == 668
    assert f"{expected} candles" in done.stdout
    first = rows(desk)[0]
    assert first[:3] == ("BTCUSDT", "15", "2026-02-08 08:30:00.000000")
    assert first[3:8] == (70159.1, 70766.5, 70021.3, 70320, 2800.256)
    again = cli(desk, "import", str(BTC))  # a single file; importing twice changes nothing
    assert again.returncode == 0, again.stderr
    assert count(desk) == 668


@pytest.mark.parametrize(("lines", "line", "reason"), [
    ([HEADER.replace(",close", ""), *(",".join(g.split(",")[:4] + g.split(",")[5:]) for g in GOOD)],
     1, "missing column(s) close"),
    ([HEADER, GOOD[0], GOOD[1].replace("70622.9", "7o622.9"), GOOD[2]], 3, "close is not a number"),
    ([HEADER, GOOD[0], GOOD[1], GOOD[2].replace(",70500.5,", ",70800.5,")], 4, "high < low"),
    ([HEADER, GOOD[0], GOOD[2], GOOD[1], GOOD[3]], 4, "not after the previous line"),
    ([HEADER, GOOD[0], GOOD[1].replace("1037.294", "1e160"), GOOD[2]], 3, "volume or turnover is above 1e+17"),
    ([HEADER, *GOOD, "4102444800000,70450.25,70500,70400,70480,10"], 6, "had not closed yet"),  # 2100-01-01
], ids=["missing-column", "non-numeric-price", "high-below-low", "unsorted", "absurd-volume", "not-closed"])
def test_bad_file_stops_the_import_and_writes_nothing(desk: Path, lines: list[str], line: int, reason: str) -> None:
    folder = desk / "in"
    folder.mkdir()
    shutil.copy(BTC, folder / BTC.name)
    write(folder, "ETH-USDT_15m_bybit.csv", lines)  # the good BTC file sorts first: still nothing is written
    done = cli(desk, "import", str(folder))
    assert done.returncode == 1
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in done.stderr, done.stderr
    assert err[0].startswith(f"error: ETH-USDT_15m_bybit.csv:{line}: ") and reason in err[0], err[0]
    assert count(desk) == 0

    single = cli(desk, "import", str(folder / "ETH-USDT_15m_bybit.csv"))
    assert single.returncode == 1 and f"ETH-USDT_15m_bybit.csv:{line}: " in single.stderr
    assert count(desk) == 0


def test_skip_bad_writes_good_rows_and_lists_skipped_lines(desk: Path) -> None:
    path = write(desk / "in", "ETH-USDT_15m_bybit.csv",
                 [HEADER, GOOD[0], GOOD[1].replace("70622.9", "abc"), GOOD[2].replace(",70500.5,", ",70800.5,"),
                  GOOD[3]])
    done = cli(desk, "import", str(path), "--skip-bad")
    assert done.returncode == 0, done.stderr
    assert "skipped ETH-USDT_15m_bybit.csv:3: close is not a number" in done.stdout
    assert "skipped ETH-USDT_15m_bybit.csv:4: high < low" in done.stdout
    assert [r[2] for r in rows(desk)] == ["2026-02-08 08:30:00.000000", "2026-02-08 09:15:00.000000"]


def test_overlapping_files_for_one_symbol_are_refused(desk: Path) -> None:
    folder = desk / "in"
    write(folder, "BTC-USDT_15m_bybit.csv", [HEADER, *GOOD])
    write(folder, "BTC-USDT_15m_other.csv", [HEADER, *GOOD[2:]])
    done = cli(desk, "import", str(folder))
    assert done.returncode == 1 and "both hold BTCUSDT 15" in done.stderr
    assert count(desk) == 0


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_then_reimport_gives_identical_data(desk: Path, tmp_path_factory: pytest.TempPathFactory,
                                                   fmt: str) -> None:
    assert cli(desk, "import", str(BYBIT)).returncode == 0
    assert cli(desk, "import", str(CANDLES / "binance_spot_2020-12_2021-07" / "XRP-USDT_1h_binance.csv")
               ).returncode == 0
    before = rows(desk)
    out = desk / "export"
    done = cli(desk, "export", "--format", fmt, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"BTC-USDT_15m_bybit.{fmt}", f"XRP-USDT_1h_bybit.{fmt}"]
    only = cli(desk, "export", "--format", fmt, "--symbols", "xrpusdt", "--interval", "1h", "--out", str(desk / "x"))
    assert only.returncode == 0 and [p.name for p in (desk / "x").iterdir()] == [f"XRP-USDT_1h_bybit.{fmt}"]

    fresh = tmp_path_factory.mktemp("fresh")
    assert run(["migrate"], fresh, desk_env()).returncode == 0
    again = cli(fresh, "import", str(out))
    assert again.returncode == 0, again.stderr
    assert rows(fresh) == before and len(before) == 668 + 5482


def test_refuses_a_database_not_at_head(tmp_path: Path) -> None:
    done = cli(tmp_path, "import", str(BTC))
    assert done.returncode == 3
    assert "python -m bot migrate" in done.stderr and "Traceback" not in done.stderr


# -- backfill against the fake Bybit REST server ---------------------------------------------------------------


def _history(symbol: str, now: datetime, n: int) -> list[Candle]:
    """n closed 15m candles (real BTC prices) ending at the candle that is open at `now`, which is included."""
    src = read_candle_file(BTC)[0]
    size = INTERVAL_MS["15"]
    open_now = int(now.timestamp() * 1000) // size * size
    out = []
    for k in range(n + 1):
        c = src.candle(k % len(src))
        out.append(Candle(symbol, "15", ms_to_dt(open_now - (n - k) * size), c.open, c.high, c.low, c.close,
                          c.volume, round(c.close * c.volume, 4)))
    return out


def test_backfill_from_fake_bybit(desk: Path) -> None:
    now = datetime.now(UTC)
    btc, eth = _history("BTCUSDT", now, 2_500), _history("ETHUSDT", now, 300)
    # the server's clock stays at `now`: the newest candle is open by its clock whenever the CLI runs
    with FakeBybit(clock=lambda: now) as fake:
        fake.set_history("BTCUSDT", "15", btc)
        fake.set_history("ETHUSDT", "15", eth)
        done = cli(desk, "backfill", "--symbols", "BTCUSDT,ethusdt", "--interval", "15", "--days", "30",
                   "--endpoint", fake.url)
        assert done.returncode == 0, done.stderr
        assert "BTCUSDT 15: 2500 candles" in done.stdout and "ETHUSDT 15: 300 candles" in done.stdout
        assert all(int(q["limit"]) <= 1000 for q in fake.kline_requests)
        assert len({q["end"] for q in fake.kline_requests if q["symbol"] == "BTCUSDT"}) >= 3  # paged

        stored = [r for r in rows(desk) if r[0] == "BTCUSDT"]
        assert len(stored) == 2_500
        expected = btc[:-1]  # every closed candle, oldest first; the open one is not stored
        assert [r[2] for r in stored] == [c.open_time.strftime("%Y-%m-%d %H:%M:%S.%f") for c in expected]
        assert [r[3:9] for r in stored] == [(c.open, c.high, c.low, c.close, c.volume, c.turnover)
                                            for c in expected]

        # the window: --days 1 stores only the last day's candles; again through the environment variable
        fresh = desk / "one-day"
        fresh.mkdir()
        assert run(["migrate"], fresh, desk_env()).returncode == 0
        one_day = cli(fresh, "backfill", "--symbols", "BTCUSDT", "--days", "1", BYBIT_REST_URL=fake.url)
        assert one_day.returncode == 0, one_day.stderr
        assert 94 <= count(fresh) <= 96  # a day of 15m candles, less the open one and the one at the edge

        # an unknown symbol fails alone: one line for it, exit 1, the others stored
        again = cli(desk, "backfill", "--symbols", "NOPEUSDT,ETHUSDT", "--days", "30", "--endpoint", fake.url)
        assert again.returncode == 1
        assert "NOPEUSDT 15: failed" in again.stderr and "Traceback" not in again.stderr
        assert count(desk, "ETHUSDT") == 300 and count(desk) == 2_800
