"""Settings: every Railway URL form is accepted, every bad value is named, live mode is guarded."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings, normalize_database_url

ENV_KEYS = [
    "DATABASE_URL", "REDIS_URL", "TELEGRAM_BOT_TOKEN", "TELEGRAM_ADMIN_IDS", "TELEGRAM_VIEWER_IDS",
    "TELEGRAM_API_SERVER", "TELEGRAM_WEBHOOK_URL", "TELEGRAM_WEBHOOK_SECRET", "BYBIT_API_KEY", "BYBIT_API_SECRET",
    "BYBIT_ENV", "TRADING_MODE", "LIVE_TRADING_CONFIRM", "SENTRY_DSN", "PORT", "LOG_LEVEL", "LOG_FORMAT",
    "SECRET_KEY", "DATA_DIR",
]
TOKEN = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"
KEY = "x" * 40


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env, and ./var lands in the temp dir


@pytest.mark.parametrize(("given", "expected"), [
    ("postgres://u:p@host.railway.internal:5432/railway",
     "postgresql+asyncpg://u:p@host.railway.internal:5432/railway"),
    ("postgresql://postgres:s%40cret@roundhouse.proxy.rlwy.net:41234/railway",
     "postgresql+asyncpg://postgres:s%40cret@roundhouse.proxy.rlwy.net:41234/railway"),
    ("postgresql://u:p@h:5432/db?sslmode=require", "postgresql+asyncpg://u:p@h:5432/db?ssl=require"),
    ("postgresql+asyncpg://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
    ("postgresql+psycopg2://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
    ("sqlite:///var/desk.db", "sqlite+aiosqlite:///var/desk.db"),
    ("sqlite+aiosqlite:////abs/desk.db", "sqlite+aiosqlite:////abs/desk.db"),
])
def test_database_url_forms(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected
    assert load_settings(database_url=given, secret_key=KEY).database_url == expected


def test_embedded_defaults(tmp_path: Path) -> None:
    s = load_settings()
    assert s.database_url == "sqlite+aiosqlite:///var/phantomdesk.db"
    assert s.embedded and s.trading_mode == "paper" and s.port == 8080 and s.redis_url is None
    assert s.telegram_bot_token is None


def test_env_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_ADMIN_IDS", "11, 22")
    monkeypatch.setenv("TELEGRAM_VIEWER_IDS", "33")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("REDIS_URL", "redis://default:pw@redis.railway.internal:6379")
    s = load_settings()
    assert s.admin_ids == {11, 22} and s.viewer_ids == {11, 22, 33}
    assert s.log_level == "DEBUG"
    assert s.telegram_bot_token is not None and TOKEN not in repr(s)
    assert TOKEN in s.secret_values() and "pw" not in s.secret_values()  # shorter than 4: not a useful mask


@pytest.mark.parametrize(("env", "named"), [
    ({"PORT": "eighty"}, "PORT"),
    ({"PORT": "70000"}, "PORT"),
    ({"TRADING_MODE": "yolo"}, "TRADING_MODE"),
    ({"BYBIT_ENV": "moon"}, "BYBIT_ENV"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"DATABASE_URL": "mysql://u:p@h/db"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://u:p@h"}, "DATABASE_URL"),
    ({"REDIS_URL": "http://h:6379"}, "REDIS_URL"),
    ({"TELEGRAM_BOT_TOKEN": "not-a-token"}, "TELEGRAM_BOT_TOKEN"),
    ({"TELEGRAM_ADMIN_IDS": "12,abc"}, "TELEGRAM_ADMIN_IDS"),
    ({"TELEGRAM_API_SERVER": "ftp://x"}, "TELEGRAM_API_SERVER"),
    ({"BACKUP_S3_URL": "https://backups.example.com"}, "BACKUP_S3_URL"),
    ({"BACKUP_S3_URL": "s3://backups?key=secret"}, "BACKUP_S3_URL"),
    ({"BACKUP_S3_URL": "s3://bk", "BACKUP_S3_ENDPOINT": "minio:9000"}, "BACKUP_S3_ENDPOINT"),
    ({"TELEGRAM_WEBHOOK_URL": "https://desk.example.com"}, "TELEGRAM_WEBHOOK_SECRET"),
    ({"TELEGRAM_WEBHOOK_URL": "http://desk.example.com", "TELEGRAM_WEBHOOK_SECRET": "s3"}, "TELEGRAM_WEBHOOK_URL"),
    ({"TELEGRAM_WEBHOOK_URL": "https://d.example.com", "TELEGRAM_WEBHOOK_SECRET": "bad secret!"},
     "TELEGRAM_WEBHOOK_SECRET"),
    ({"SECRET_KEY": "short"}, "SECRET_KEY"),
    ({"DATABASE_URL": "postgresql://u:p@h/db"}, "SECRET_KEY"),
    ({"TRADING_MODE": "live"}, "TRADING_MODE"),
    ({"TRADING_MODE": "live", "BYBIT_API_KEY": "k" * 18, "BYBIT_API_SECRET": "s" * 36}, "LIVE_TRADING_CONFIRM"),
    ({"TRADING_MODE": "live", "BYBIT_API_KEY": "k" * 18, "BYBIT_API_SECRET": "s" * 36,
      "LIVE_TRADING_CONFIRM": "no"}, "LIVE_TRADING_CONFIRM"),
])
def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(named + ":"), message
    assert "\n" not in message
    for value in env.values():  # the offending value itself is never echoed (it may be a secret)
        if len(value) > 6:
            assert value not in message


def test_live_mode_with_everything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_MODE", "live")
    monkeypatch.setenv("BYBIT_API_KEY", "k" * 18)
    monkeypatch.setenv("BYBIT_API_SECRET", "s" * 36)
    monkeypatch.setenv("LIVE_TRADING_CONFIRM", "yes")
    assert load_settings().trading_mode == "live"


@pytest.mark.parametrize(("env", "named"), [
    ({"PORT": "abc"}, "PORT"),
    ({"TRADING_MODE": "live"}, "TRADING_MODE"),
    ({"TRADING_MODE": "live", "BYBIT_API_KEY": "k" * 18, "BYBIT_API_SECRET": "s" * 36}, "LIVE_TRADING_CONFIRM"),
    ({"DATABASE_URL": "oracle://x"}, "DATABASE_URL"),
])
def test_process_exits_2_with_one_line(tmp_path: Path, env: dict[str, str], named: str) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    done = subprocess.run([sys.executable, "-m", "bot", "serve"], env={**base, **env}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{named}:" in lines[0], done.stderr
    assert not (tmp_path / "var").exists()  # nothing was started or written


def test_embedded_secret_key_generated_once(tmp_path: Path) -> None:
    first = load_settings().signing_key()
    path = tmp_path / "var" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_settings().signing_key() == first  # kept, not regenerated
    assert len(first) >= 32


def test_damaged_generated_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret_key").write_text("abc\n")
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        load_settings().signing_key()


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=9123\nTRADING_MODE=paper\n")
    assert load_settings().port == 9123
