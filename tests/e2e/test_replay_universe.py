"""`replay --universe`: the rule over the shared candle files at the replay's market time. Every signal is on a
symbol the rule had selected at the last refresh before it (recomputed here from the files), the excluded symbol
never signals, and the run is deterministic."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.market.candle import dt_to_ms
from core.universe import UniverseRule, select
from core.universe_replay import SeriesDirectory
from storage.candle_files import read_candle_dir
from tests.conftest import CANDLES
from tests.hostproc import desk_env, run

DATA = CANDLES / "binance_spot_2020-12_2021-07"
RULE = {"top": 1, "exclude": ["BTCUSDT"]}
START, END = datetime(2021, 5, 1, tzinfo=UTC), datetime(2021, 5, 15, tzinfo=UTC)


def _replay(tmp_path: Path, name: str) -> tuple[dict[str, object], list[tuple[str, str]]]:
    db = tmp_path / f"{name}.db"
    done = run(["replay", "--data", str(DATA), "--from", "2021-05-01", "--to", "2021-05-15", "--no-ml", "--json",
                "--universe", json.dumps(RULE), "--universe-refresh", "6", "--db", f"sqlite:///{db}"],
               tmp_path, desk_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with sqlite3.connect(db) as conn:
        signals = conn.execute("SELECT symbol, time FROM signals ORDER BY time, id").fetchall()
    return json.loads(done.stdout.strip().splitlines()[-1]), signals


def test_replay_with_a_universe_rule(tmp_path: Path) -> None:
    doc, signals = _replay(tmp_path, "a")
    assert signals, "the rule's symbols trade"
    directory = SeriesDirectory(read_candle_dir(DATA, None, ["15", "5"]))
    rule = UniverseRule.model_validate(RULE)
    first_close = START + timedelta(minutes=5)
    chosen: dict[datetime, str] = {}
    for symbol, time in signals:
        at = datetime.fromisoformat(time).replace(tzinfo=UTC)
        refresh = max(first_close, datetime.fromtimestamp(dt_to_ms(at) // 21_600_000 * 21_600, UTC))
        if refresh not in chosen:
            [chosen[refresh]] = select(rule, directory.listings_now(), directory.turnovers_at(refresh),
                                       refresh).universe.symbols
        assert symbol == chosen[refresh], (symbol, at, chosen[refresh])
    assert "BTCUSDT" not in {s for s, _ in signals}
    assert doc["universe"] and isinstance(doc["universe_changes"], int)
    assert doc["universe_turnover_estimated"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]

    again, signals_again = _replay(tmp_path, "b")
    assert signals_again == signals and again["ledger_digest"] == doc["ledger_digest"]
    assert again["phantom_digest"] == doc["phantom_digest"]
