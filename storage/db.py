"""Database engine and sessions for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_fixed

T = TypeVar("T")

# what "the database does not answer" looks like through SQLAlchemy, asyncpg and aiosqlite
DB_DOWN = (OperationalError, InterfaceError, DBAPIError, OSError, ConnectionError, TimeoutError)


# SQLSTATE classes of a server that cannot serve now: connection exceptions (08), insufficient
# resources (53: disk_full 53100, out of memory, too many connections), operator intervention (57:
# shutting down, starting up, crash recovery). SQLite's "database or disk is full" is an OperationalError.
UNAVAILABLE_SQLSTATES = ("08", "53", "57")


def is_db_down(exc: BaseException) -> bool:
    """A failure to reach the database (retry later), as opposed to a statement it refused (a bug)."""
    if isinstance(exc, OperationalError | InterfaceError | OSError | ConnectionError | TimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    return bool(exc.connection_invalidated) or sqlstate.startswith(UNAVAILABLE_SQLSTATES)


async def when_available(fn: Callable[[], Awaitable[T]], *, retry_s: float = 1.0, give_up_s: float = 900.0) -> T:
    """Run `fn`, retrying while the database does not answer (a restart, a failover)."""
    async for attempt in AsyncRetrying(retry=retry_if_exception(is_db_down), wait=wait_fixed(retry_s),
                                       stop=stop_after_delay(give_up_s), reraise=True):
        with attempt:
            return await fn()
    raise AssertionError("unreachable")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, null_pool: bool = False, **options: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, enforced foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        options.setdefault("connect_args", {"timeout": 30})
        engine = create_async_engine(url, poolclass=NullPool if null_pool else None, **options)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    options.setdefault("connect_args", {"timeout": 10})  # a dead server must not hang a connect for a minute
    if null_pool:
        return create_async_engine(url, poolclass=NullPool, **options)
    options.setdefault("pool_pre_ping", True)
    options.setdefault("pool_size", 10)
    options.setdefault("max_overflow", 10)
    return create_async_engine(url, **options)


def cells(row: Sequence[Any]) -> tuple[Any, ...]:
    """A result row's values, to build a dataclass from in column order (typed per column by its query)."""
    return tuple(row)


def upsert(dialect: str, table: Table, key: Sequence[str], updated: Iterable[str], where: Any = None) -> Any:
    """INSERT … ON CONFLICT (key) DO UPDATE SET each `updated` column to the inserted row's value (`where`: only
    while the stored row matches it), for `dialect` ("postgresql" or "sqlite")."""
    stmt = _insert(dialect)(table)
    return stmt.on_conflict_do_update(index_elements=[table.c[k] for k in key],
                                      set_={c: stmt.excluded[c] for c in updated}, where=where)


def others(table: Table, *left_out: str) -> list[str]:
    """The names of the table's columns but `left_out` (what an upsert updates)."""
    return [c.name for c in table.c if c.name not in left_out]


def dialect_insert(session: AsyncSession) -> Any:
    """The INSERT construct with ON CONFLICT support for the session's database."""
    return _insert(session.get_bind().dialect.name)


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def session_factory(db: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(db, expire_on_commit=False)
