"""Process settings, read once from the environment (and an optional `.env`).

A bad value stops the process with exit code 2 and one line naming the variable: a desk that
guesses at its configuration is a desk that trades with the wrong keys.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

TOKEN_SHAPE = re.compile(r"^\d{3,}:[A-Za-z0-9_-]{30,}$")
WEBHOOK_SECRET_SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
SECRET_KEY_FILE = "secret_key"
DEFAULT_STRATEGIES_DIR = "strategies"  # in the working directory

IdList = Annotated[tuple[int, ...], NoDecode]
SymbolList = Annotated[tuple[str, ...], NoDecode]


class SettingsError(Exception):
    """A setting is missing or wrong; the message names the variable."""


def normalize_database_url(url: str) -> str:
    """Point every PostgreSQL/SQLite URL form at its asyncio driver.

    Railway hands out `postgresql://` (older tools `postgres://`); asyncpg spells libpq's
    `sslmode` as `ssl`.
    """
    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in {"postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg2", "postgresql+psycopg"}:
        if not parts.hostname and not dict(parse_qsl(parts.query)).get("host"):
            raise ValueError("PostgreSQL URL has no host")
        if not parts.path.strip("/"):
            raise ValueError("PostgreSQL URL has no database name")
        query = [("ssl" if k == "sslmode" else k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        return urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), parts.fragment))
    if scheme in {"sqlite", "sqlite+aiosqlite"}:
        if not url.split(":", 1)[1].startswith("///"):
            raise ValueError("SQLite URL must look like sqlite:///path/to/file.db")
        return "sqlite+aiosqlite" + url[len(parts.scheme):]
    raise ValueError(f"unsupported scheme {parts.scheme!r} (use postgresql:// or sqlite:///)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False,
        hide_input_in_errors=True,
    )

    data_dir: Path = Path("var")
    database_url: str = ""
    redis_url: str | None = None

    telegram_bot_token: SecretStr | None = None
    telegram_admin_ids: IdList = ()
    telegram_viewer_ids: IdList = ()
    telegram_api_server: str | None = None
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    public_url: str | None = None  # https:// address of this desk: the Mini App is <url>/app/ (default: the webhook's)
    miniapp_auth_max_age_s: int = Field(default=86_400, ge=60, le=30 * 86_400)  # how old a Mini App login may be

    bybit_api_key: SecretStr | None = None
    bybit_api_secret: SecretStr | None = None
    bybit_env: Literal["mainnet", "testnet", "demo"] = "mainnet"
    bybit_rest_url: str | None = None  # a relay in front of Bybit's REST API (tests: the fake exchange)
    bybit_private_ws_url: str | None = None  # the same for the private stream
    bybit_public_ws_url: str | None = None  # the same for the public kline stream
    # how often the universe job looks at the market; a bot's rule may ask for a longer interval of its own
    universe_refresh_s: float = Field(default=3600.0, ge=10, le=86_400)
    trading_mode: Literal["paper", "live"] = "paper"
    live_trading_confirm: str | None = None

    market_feed: Literal["bybit", "replay", "synthetic"] = "bybit"  # where the host's candles come from
    feed_data: Path | None = None  # MARKET_FEED=replay: folder of candle files
    feed_speed: float = Field(default=0.0, ge=0)  # replay/synthetic candles per second (0: as fast as possible)
    default_symbols: SymbolList = ("BTCUSDT", "ETHUSDT")  # the bot created on a first start
    strategies_dir: Path | None = None  # user strategies (*.py); unset: ./strategies when it exists

    backup_dir: Path | None = None  # daily archives (default: DATA_DIR/backups); 7 daily + 4 weekly kept
    backup_s3_url: str | None = None  # s3://bucket[/prefix]: each verified archive is also uploaded there
    backup_s3_endpoint: str | None = None  # an S3-compatible service (R2, B2, MinIO); unset: AWS
    backup_s3_region: str | None = None  # credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, read by boto3
    min_free_disk_pct: float = Field(default=10.0, ge=0, le=100)  # storage alerts to the admins ...
    max_journal_backlog: int = Field(default=1000, ge=0)  # ... ledger records waiting for the database
    max_db_size_mb: float | None = Field(default=None, gt=0)
    redis_watch_s: float = Field(default=30.0, ge=1, le=3600)  # how often to look whether Redis came back
    lease_ttl_s: float = Field(default=60.0, ge=3, le=3600)  # a dead holder's bots are taken over within this
    daily_report_utc: Annotated[tuple[int, int], NoDecode] = (20, 0)  # DAILY_REPORT_UTC=HH:MM

    sentry_dsn: SecretStr | None = None
    sentry_environment: str | None = None
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    secret_key: SecretStr | None = None

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return normalize_database_url(value) if value else ""

    @field_validator("redis_url", "telegram_api_server", "telegram_webhook_url", "public_url", "strategies_dir",
                     "backup_s3_url", "backup_s3_endpoint", "backup_s3_region", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("telegram_api_server", "telegram_webhook_url", "bybit_rest_url", "bybit_private_ws_url",
                     "bybit_public_ws_url", mode="before")
    @classmethod
    def _blank_url(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("backup_s3_url")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        from storage.offsite import Place

        return None if value is None else str(Place.parse(value))

    @field_validator("telegram_api_server", "telegram_webhook_url", "public_url", "backup_s3_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http(s):// URL with a host")
        return value.rstrip("/")

    @field_validator("daily_report_utc", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        if isinstance(value, str):
            m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", value)
            if not m or int(m[1]) > 23 or int(m[2]) > 59:
                raise ValueError("must be a UTC time like 20:00")
            return int(m[1]), int(m[2])
        return value

    @field_validator("default_symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> Any:
        if isinstance(value, str):
            items = tuple(v.upper() for v in re.split(r"[,\s]+", value.strip()) if v)
            if bad := [v for v in items if not re.fullmatch(r"[A-Z0-9]+USDT", v)]:
                raise ValueError(f"must be comma-separated USDT symbols like BTCUSDT, not {bad[0]!r}")
            return items
        return value

    @field_validator("telegram_admin_ids", "telegram_viewer_ids", mode="before")
    @classmethod
    def _id_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            items = [v for v in re.split(r"[,\s]+", value.strip()) if v]
            if bad := [v for v in items if not re.fullmatch(r"-?\d+", v)]:
                raise ValueError(f"must be comma-separated numeric Telegram ids, not {bad[0]!r}")
            return tuple(int(v) for v in items)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", "bybit_env", "trading_mode", "market_feed", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("telegram_bot_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not TOKEN_SHAPE.match(value.get_secret_value()):
            raise ValueError("does not look like a Bot API token (<digits>:<35 characters>)")
        return value

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not WEBHOOK_SECRET_SHAPE.match(value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("secret_key", "bybit_api_key", "bybit_api_secret", "sentry_dsn")
    @classmethod
    def _empty_secret(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("secret_key")
    @classmethod
    def _secret_key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (it signs model artifacts)")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if not self.database_url:
            self.database_url = normalize_database_url(f"sqlite:///{(self.data_dir / 'phantomdesk.db').as_posix()}")
        if self.telegram_webhook_url and not self.telegram_webhook_secret:
            raise SettingsError("TELEGRAM_WEBHOOK_SECRET: required when TELEGRAM_WEBHOOK_URL is set")
        if self.telegram_webhook_url and not self.telegram_webhook_url.startswith("https://"):
            raise SettingsError("TELEGRAM_WEBHOOK_URL: Telegram only delivers webhooks to https:// URLs")
        if self.public_url and not self.public_url.startswith("https://"):
            raise SettingsError("PUBLIC_URL: Telegram opens Mini Apps from https:// URLs only")
        if self.trading_mode == "live":
            if not (self.bybit_api_key and self.bybit_api_secret):
                raise SettingsError("TRADING_MODE: live needs BYBIT_API_KEY and BYBIT_API_SECRET")
            if (self.live_trading_confirm or "").strip().lower() != "yes":
                raise SettingsError("LIVE_TRADING_CONFIRM: set it to 'yes' to trade real money in live mode")
        if self.market_feed == "replay" and (self.feed_data is None or not self.feed_data.exists()):
            raise SettingsError("FEED_DATA: MARKET_FEED=replay needs an existing folder of candle files")
        if self.strategies_dir is not None and not self.strategies_dir.is_dir():
            raise SettingsError(f"STRATEGIES_DIR: no such folder: {self.strategies_dir}")
        if self.secret_key is None and not self.embedded:
            raise SettingsError("SECRET_KEY: required when DATABASE_URL is not SQLite (it signs model artifacts)")
        return self

    @property
    def embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def strategies_path(self) -> Path | None:
        """Where user strategies are loaded from: STRATEGIES_DIR, or ./strategies if there is one."""
        if self.strategies_dir is not None:
            return self.strategies_dir
        default = Path(DEFAULT_STRATEGIES_DIR)
        return default if default.is_dir() else None

    @property
    def miniapp_url(self) -> str | None:
        """Where Telegram opens the Mini App (the menu button, /status): PUBLIC_URL or the webhook's host."""
        if self.public_url:
            return self.public_url + "/app/"
        if self.telegram_webhook_url:  # the same server: its scheme and host, not the webhook's path
            parts = urlsplit(self.telegram_webhook_url)
            return f"{parts.scheme}://{parts.netloc}/app/"
        return None

    @property
    def backups(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    @property
    def admin_ids(self) -> frozenset[int]:
        return frozenset(self.telegram_admin_ids)

    @property
    def viewer_ids(self) -> frozenset[int]:
        return frozenset(self.telegram_viewer_ids) | self.admin_ids

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log/Sentry redaction layer."""
        values = [s.get_secret_value() for s in (
            self.telegram_bot_token, self.telegram_webhook_secret, self.bybit_api_key,
            self.bybit_api_secret, self.sentry_dsn, self.secret_key) if s is not None]
        password = urlsplit(self.database_url).password
        if password:
            values.append(password)
        if self.redis_url and (rpass := urlsplit(self.redis_url).password):
            values.append(rpass)
        return [v for v in values if len(v) >= 4]

    def signing_key(self) -> bytes:
        """SECRET_KEY, or (embedded mode) a key generated once under the data dir with 0600 permissions."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / SECRET_KEY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = -1
        if fd < 0:  # generated by an earlier start
            key = path.read_text().strip()
            if len(key) < 32:
                raise SettingsError(f"SECRET_KEY: the generated key in {path} is damaged; delete it or set SECRET_KEY")
            self.secret_key = SecretStr(key)
            return key.encode()
        key = secrets.token_urlsafe(48)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.secret_key = SecretStr(key)
        return key.encode()


def _describe(error: Mapping[str, Any]) -> str:
    loc = error.get("loc") or ("settings",)
    name = str(loc[0]).upper()
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{name}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings; raise SettingsError with a one-line, secret-free explanation."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        raise SettingsError("; ".join(_describe(e) for e in errors)) from None


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        sys.stderr.write(f"phantomdesk: bad configuration: {exc}\n")
        raise SystemExit(2) from None
