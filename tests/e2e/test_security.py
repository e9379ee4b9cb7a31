"""Secrets stay secret: with every secret configured, a running desk writes none of them to its log,
its database or /health."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.hostproc import DeskProcess, desk_env, run

SECRETS = {
    "TELEGRAM_WEBHOOK_SECRET": "whsecret-Qm9vYmFyYmF6cXV4",
    "BYBIT_API_KEY": "pdKey7T4mA9pLkW3sRv",
    "BYBIT_API_SECRET": "pdSecretZ9yXwVuTsRqPoNmLkJiHgFeDc987",
    "SECRET_KEY": "pdSigningKey-0123456789abcdefghijklmnopqrstuvwxyz",
    "SENTRY_DSN": "https://a1b2c3d4e5f6a7b8@o1.ingest.sentry.io/42",
}


def _stored(tmp_path: Path) -> int:
    """Candles the desk has written so far (0 before its database exists)."""
    path = tmp_path / "var" / "phantomdesk.db"
    if not path.exists():
        return 0
    con = sqlite3.connect(path, timeout=5)
    try:
        return int(con.execute("SELECT count(*) FROM candles").fetchone()[0])
    except sqlite3.OperationalError:  # not migrated yet
        return 0
    finally:
        con.close()


def test_no_secret_in_logs_database_or_health(tmp_path: Path) -> None:
    env = desk_env(**SECRETS, LOG_LEVEL="DEBUG")
    assert run(["migrate"], tmp_path, env).returncode == 0
    desk = DeskProcess(tmp_path, env).start()
    try:
        # the synthetic market trades for a while: candles stored, signals, phantoms
        health = desk.wait_healthy(timeout=120, until=lambda b: (b["bots"] and (b["bots"][0].get("candles") or 0) > 1500
                                                               and _stored(tmp_path) > 1000))
    finally:
        assert desk.terminate(timeout=20)[0] == 0
    log = desk.output
    assert "listening on" in log and "stopped" in log
    con = sqlite3.connect(tmp_path / "var" / "phantomdesk.db")
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    dump = []
    for table in tables:
        for row in con.execute(f"SELECT * FROM {table}"):
            dump.append(" ".join(str(v) for v in row))
    database = "\n".join(dump)
    assert con.execute("SELECT count(*) FROM candles").fetchone()[0] > 1000  # the desk really ran and wrote
    assert con.execute("SELECT count(*) FROM bots").fetchone()[0] == 1
    for name, secret in SECRETS.items():
        for where, text in (("log", log), ("database", database), ("/health", str(health))):
            assert secret not in text, f"{name} leaked into the {where}"
    key_file = tmp_path / "var" / "secret_key"
    assert not key_file.exists()  # SECRET_KEY given: nothing generated on disk
