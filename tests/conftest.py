"""Shared fixtures: real PostgreSQL and Redis (from `make test`, or started here), fresh databases per test.

A test that needs a server is skipped only when the server cannot be had and CI is not set;
under CI=true it fails instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bench.data import candles_dir
from tests import servers

ROOT = Path(__file__).resolve().parent.parent
CANDLES = candles_dir()  # the shared real candles (bench/data.py says where they are looked for)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(what: str, why: str) -> None:
    message = f"{what} unavailable: {why}"
    if IN_CI:
        pytest.fail(message + " (CI is set: server tests must run, not skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def _started_servers() -> Iterator[dict[str, str]]:
    if os.environ.get(servers.PG_URL_ENV) and os.environ.get(servers.REDIS_URL_ENV):
        yield {k: v for k, v in os.environ.items() if k.startswith("PD_TEST_")}
        return
    # plain `pytest`: start what `make test` would have started
    with servers.servers() as env:
        yield {**{k: v for k, v in os.environ.items() if k.startswith("PD_TEST_")}, **env}


@pytest.fixture(scope="session")
def pg_server_url(_started_servers: dict[str, str]) -> str:
    url = _started_servers.get(servers.PG_URL_ENV)
    if not url:
        _unavailable("PostgreSQL", _started_servers.get(servers.PG_URL_ENV + "_ERROR", "not started"))
    return url


@pytest.fixture(scope="session")
def redis_server_url(_started_servers: dict[str, str]) -> str:
    url = _started_servers.get(servers.REDIS_URL_ENV)
    if not url:
        _unavailable("Redis", _started_servers.get(servers.REDIS_URL_ENV + "_ERROR", "not started"))
    return url


@pytest.fixture(scope="session")
def s3_server_url(_started_servers: dict[str, str]) -> str:
    url = _started_servers.get(servers.S3_URL_ENV)
    if not url:
        _unavailable("the S3 server", _started_servers.get(servers.S3_URL_ENV + "_ERROR", "not started"))
    return url


async def _admin(pg_server_url: str, sql: str) -> None:
    import asyncpg

    dsn = pg_server_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_server_url, f"CREATE DATABASE {name}"))
    yield pg_server_url.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_admin(pg_server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on both databases."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
async def redis_url(redis_server_url: str) -> AsyncIterator[str]:
    """The test Redis, flushed before each test: a database of its own per pytest-xdist worker (gw0 -> 0, gw1 -> 1,
    ...), so tests running side by side never flush each other's keys."""
    from redis.asyncio import Redis

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    url = redis_server_url.rsplit("/", 1)[0] + f"/{int(worker.removeprefix('gw')) % 16}"
    client = Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    yield url
