"""A migrated PostgreSQL database for one benchmark: a throwaway durable cluster (fsync on, as in
production), or a database of its own on the server in PD_TEST_PG_URL; dropped afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

from storage import migrations
from tests.servers import PG_URL_ENV, Postgres


async def _admin(server_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def migrated_database(prefix: str) -> Iterator[str]:
    server_url = os.environ.get(PG_URL_ENV)
    pg = None
    if not server_url:
        pg = Postgres(durable=True).start()
        server_url = pg.url
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(server_url, f"CREATE DATABASE {name}"))
    url = server_url.rsplit("/", 1)[0] + "/" + name
    try:
        migrations.upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        if pg is not None:
            pg.destroy()
