"""Backups: every table into one archive, verified by restoring it.

The archive is a zip file `phantomdesk-YYYYMMDDTHHMMSSZ.zip` (UTC) holding

    tables/<table>.parquet   one per table of Base.metadata, in dependency order, zstd-compressed Parquet
    manifest.json            format, creation time, schema (Alembic) revision, database size, and per table:
                             member, rows, bytes, sha256 of the member, content hash, columns and their kinds

The Parquet members are already compressed, so they are stored in the zip as they are; the zip adds a
CRC per member and a central directory at the end, so a truncated file cannot pass for a whole one.
Column types survive: Numeric as decimal128(38, 10), times as UTC timestamps (µs), JSON as its text,
bytes as binary.

Tables are read in chunks through a streaming cursor (server-side on PostgreSQL) inside one read
snapshot, so a desk writing meanwhile cannot produce an archive whose rows contradict each other (a
phantom whose signal is missing). The archive is written to a hidden partial file, fsynced and renamed.

The content hash of a table is computed from the rows as the database returns them: every row to a
canonical text, its sha256, summed modulo 2**256 (so row order does not matter: PostgreSQL and
SQLite sort strings differently). Verification restores the archive into a throwaway SQLite database
migrated to head and computes the same hash from there. Numeric values enter the hash at double
precision, because SQLite stores NUMERIC as REAL; the exact values are guarded by the members' sha256.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    Numeric,
    Table,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.health import database_size
from storage.models import Base
from storage.types import UTCDateTime

log = logging.getLogger(__name__)

FORMAT = "phantomdesk-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PREFIX = "phantomdesk-"
SUFFIX = ".zip"
NAME = re.compile(r"^phantomdesk-(\d{8}T\d{6}Z)\.zip$")
PARTIAL = re.compile(r"^\.phantomdesk-(\d{8}T\d{6}Z)\.zip\.partial$")
STAMP = "%Y%m%dT%H%M%SZ"
CHUNK_ROWS = 5000
BLOB_CHUNK_ROWS = 50  # ml_models rows carry model artifacts of a few MB each
COPY_BLOCK = 1 << 20
MOD = 1 << 256

ARROW_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "decimal": pa.decimal128(38, 10),
    "datetime": pa.timestamp("us", tz="UTC"), "date": pa.date32(), "json": pa.string(), "bytes": pa.binary(),
    "str": pa.string(),
}


class BackupError(Exception):
    """The backup could not be written; the message says why."""


def kind_of(column: Column[Any]) -> str:
    """How a column is carried in the archive (Float before Numeric: it is a subclass)."""
    t = column.type
    for cls, kind in ((Boolean, "bool"), (Integer, "int"), (Float, "float"), (Numeric, "decimal"),
                      (UTCDateTime, "datetime"), (DateTime, "datetime"), (Date, "date"), (JSON, "json"),
                      (LargeBinary, "bytes")):
        if isinstance(t, cls):
            return kind
    return "str"


def tables() -> list[Table]:
    return list(Base.metadata.sorted_tables)  # parents before children: a restore never breaks a foreign key


def archive_name(now: datetime) -> str:
    return f"{PREFIX}{now.astimezone(UTC).strftime(STAMP)}{SUFFIX}"


def archive_time(path: Path) -> datetime | None:
    """The UTC time in an archive's name, or None for a file that is not one of ours."""
    m = NAME.match(path.name)
    return datetime.strptime(m[1], STAMP).replace(tzinfo=UTC) if m else None


# -- canonical rows and the content hash ---------------------------------------------------------------------


_quote = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # a JSON string literal


def _json_text(value: Any) -> str:
    return _quote(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


# one value -> its canonical text; none of these can produce "|" outside a quoted string, so joining a
# row's texts with "|" is unambiguous
CANONICAL: dict[str, Callable[[Any], str]] = {
    "datetime": lambda v: v.astimezone(UTC).isoformat(),
    "date": lambda v: v.isoformat(),
    "decimal": lambda v: repr(float(v)),  # SQLite keeps NUMERIC as REAL: compare what both databases hold
    "float": lambda v: repr(float(v)),
    "json": _json_text,
    "bytes": lambda v: hashlib.sha256(v).hexdigest(),
    "bool": lambda v: "1" if v else "0",
    "int": lambda v: str(int(v)),
    "str": _quote,
}


class ContentHash:
    """Order-independent hash of a table's rows (see the module docstring)."""

    def __init__(self, columns: Sequence[tuple[str, str]]) -> None:
        self.convert = [CANONICAL[k] for _, k in columns]
        self.total = 0
        self.rows = 0
        self.header = json.dumps(list(columns), separators=(",", ":"))

    def update(self, rows: Sequence[Sequence[Any]]) -> None:
        total, convert, sha256 = self.total, self.convert, hashlib.sha256
        for row in rows:
            text = "|".join(["~" if v is None else f(v) for f, v in zip(convert, row, strict=True)])
            total += int.from_bytes(sha256(text.encode()).digest(), "big")
        self.total = total % MOD
        self.rows += len(rows)

    def hexdigest(self) -> str:
        return hashlib.sha256(f"{self.header}|{self.rows}|{self.total:064x}".encode()).hexdigest()


def columns_of(table: Table) -> list[tuple[str, str]]:
    return [(c.name, kind_of(c)) for c in table.columns]


async def _chunks(conn: AsyncConnection, table: Table, rows: int) -> AsyncIterator[Sequence[Any]]:
    """The table's rows in primary-key order, `rows` at a time, through a streaming cursor."""
    query = select(table).order_by(*table.primary_key.columns)
    result = await conn.stream(query.execution_options(yield_per=rows))
    async for part in result.partitions(rows):
        yield part


def _chunk_rows(table: Table) -> int:
    return BLOB_CHUNK_ROWS if any(kind_of(c) == "bytes" for c in table.columns) else CHUNK_ROWS


async def table_digest(conn: AsyncConnection, table: Table) -> tuple[int, str]:
    digest = ContentHash(columns_of(table))
    async for part in _chunks(conn, table, _chunk_rows(table)):
        await asyncio.to_thread(digest.update, part)
    return digest.rows, digest.hexdigest()


# -- writing -------------------------------------------------------------------------------------------------


class _HashingWriter:
    """A write-only file for pyarrow that hashes and counts what passes through to the zip member."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:  # the zip member is closed by its owner
        self.closed = True


def _to_batch(columns: list[tuple[str, str]], schema: pa.Schema, rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    arrays = []
    for i, (name, kind) in enumerate(columns):
        values = [row[i] for row in rows]
        if kind == "json":  # its text, even for a JSON null (the column is never SQL NULL for JSON columns)
            values = [json.dumps(v, separators=(",", ":"), ensure_ascii=False) for v in values]
        try:
            arrays.append(pa.array(values, type=schema.field(name).type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise BackupError(f"column {name}: a value does not fit {schema.field(name).type}: {exc}") from exc
    return pa.record_batch(arrays, schema=schema)


async def _export(conn: AsyncConnection, zf: zipfile.ZipFile, table: Table, now: datetime) -> dict[str, Any]:
    columns = columns_of(table)
    schema = pa.schema([pa.field(name, ARROW_TYPES[kind]) for name, kind in columns])
    member = f"tables/{table.name}.parquet"
    info = zipfile.ZipInfo(member, date_time=now.timetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED  # Parquet pages are zstd-compressed already
    digest = ContentHash(columns)
    with zf.open(info, "w", force_zip64=True) as raw:
        sink = _HashingWriter(raw)
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
        try:
            async for part in _chunks(conn, table, _chunk_rows(table)):
                def write(rows: Sequence[Sequence[Any]] = part) -> None:
                    digest.update(rows)
                    writer.write_batch(_to_batch(columns, schema, rows))

                await asyncio.to_thread(write)  # conversion and compression off the event loop
        except BackupError as exc:
            raise BackupError(f"table {table.name}: {exc}") from exc
        finally:
            writer.close()
    return {"name": table.name, "member": member, "rows": digest.rows, "bytes": sink.size,
            "sha256": sink.sha256.hexdigest(), "content_sha256": digest.hexdigest(),
            "columns": [[n, k] for n, k in columns]}


@asynccontextmanager
async def _snapshot(db: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One connection reading one consistent state of the database."""
    async with db.connect() as conn:
        if db.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            await conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        else:
            # pysqlite only opens a transaction before a write; an explicit BEGIN makes the reads one
            # snapshot (WAL: writers carry on meanwhile)
            await conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            await conn.rollback()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def create_backup(db: AsyncEngine, directory: Path, now: datetime | None = None) -> Path:
    """Write every table to a new archive in `directory`; returns its path."""
    from storage.migrations import current_revision

    now = (now or datetime.now(UTC)).astimezone(UTC)
    final = await asyncio.to_thread(_target, directory, now)
    partial = directory / f".{final.name}.partial"
    revision = await current_revision(db)
    if revision is None:
        raise BackupError("the database has no schema (run `python -m bot migrate`): nothing to back up")
    size = await database_size(db)
    entries = []
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            async with _snapshot(db) as conn:
                for table in tables():
                    entries.append(await _export(conn, zf, table, now))
                    log.debug("backup: %s, %d rows", table.name, entries[-1]["rows"])
            manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "created_at": now.isoformat(),
                "alembic_revision": revision, "source": {"dialect": db.dialect.name, "database_bytes": size},
                "content_hash": "sha256 of each row's canonical text, summed mod 2**256; numerics as doubles",
                "tables": entries,
            }
            zf.writestr(zipfile.ZipInfo(MANIFEST, date_time=now.timetuple()[:6]),
                        json.dumps(manifest, indent=2), compress_type=zipfile.ZIP_DEFLATED)
        size = await asyncio.to_thread(_publish, partial, final)
    except BaseException:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
        raise
    log.info("backup %s: %d tables, %d rows, %d bytes", final.name, len(entries), sum(e["rows"] for e in entries),
             size)
    return final


def _target(directory: Path, now: datetime) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / archive_name(now)
    if final.exists():
        raise BackupError(f"{final} already exists")
    return final


def _publish(partial: Path, final: Path) -> int:
    """Durably in place: the data on disk before the name, the name on disk before we say done."""
    with partial.open("rb+") as f:
        os.fsync(f.fileno())
    os.replace(partial, final)
    _fsync_dir(final.parent)
    return final.stat().st_size


# -- verification --------------------------------------------------------------------------------------------


@dataclass
class TableCheck:
    name: str
    rows: int  # in the manifest
    content_sha256: str  # in the manifest
    restored_rows: int | None = None
    hash_ok: bool | None = None

    @property
    def ok(self) -> bool:
        return self.restored_rows == self.rows and bool(self.hash_ok)


@dataclass
class VerifyReport:
    archive: Path
    created_at: str | None = None
    revision: str | None = None
    tables: list[TableCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.tables) and all(t.ok for t in self.tables)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}"[:300] if text else type(exc).__name__


def read_manifest(zf: zipfile.ZipFile) -> dict[str, Any]:
    try:
        raw = zf.read(MANIFEST)
    except KeyError:
        raise BackupError(f"no {MANIFEST} in the archive (not a phantomdesk backup, or damaged)") from None
    except Exception as exc:  # a bad CRC, a cut member, a garbled directory entry: all mean damage
        raise BackupError(f"{MANIFEST} is damaged: {_reason(exc)}") from None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise BackupError(f"{MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError(f"{MANIFEST} does not describe a {FORMAT} archive")
    if doc.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"archive format version {doc.get('format_version')!r}; this code reads {FORMAT_VERSION}")
    if not isinstance(doc.get("tables"), list):
        raise BackupError(f"{MANIFEST} lists no tables")
    return doc


def _extract(zf: zipfile.ZipFile, member: str, target: Path) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with zf.open(member) as src, target.open("wb") as dst:
        while block := src.read(COPY_BLOCK):
            sha.update(block)
            size += len(block)
            dst.write(block)
    return sha.hexdigest(), size


def _check_members(zf: zipfile.ZipFile, manifest: dict[str, Any], workdir: Path,
                   report: VerifyReport) -> dict[str, Path]:
    """Each member's presence, sha256, size, row count and columns; the extracted files by table."""
    known = {t.name: t for t in tables()}
    listed = {str(e.get("name")): e for e in manifest["tables"]}
    for name in known.keys() - listed.keys():
        report.problems.append(f"table {name} is missing from the manifest")
    for name in listed.keys() - known.keys():
        report.problems.append(f"the manifest lists table {name}, which this schema does not have")
    names = set(zf.namelist())
    extra = names - {MANIFEST} - {str(e.get("member")) for e in manifest["tables"]}
    for member in sorted(extra):
        report.problems.append(f"{member}: in the archive but not in the manifest")
    files: dict[str, Path] = {}
    for name, entry in listed.items():
        if name not in known:
            continue
        member = str(entry.get("member"))
        report.tables.append(TableCheck(name, int(entry.get("rows", -1)), str(entry.get("content_sha256"))))
        if member not in names:
            report.problems.append(f"{member}: missing from the archive")
            continue
        target = workdir / f"{name}.parquet"
        try:
            sha, size = _extract(zf, member, target)
        except Exception as exc:  # zipfile raises many kinds for a damaged entry
            report.problems.append(f"{member}: damaged ({_reason(exc)})")
            continue
        if size != entry.get("bytes") or sha != entry.get("sha256"):
            report.problems.append(f"{member}: sha256 {sha[:12]}… ({size} bytes) differs from the manifest's "
                                   f"{str(entry.get('sha256'))[:12]}… ({entry.get('bytes')} bytes): altered or damaged")
            continue
        want = columns_of(known[name])
        if [tuple(c) for c in entry.get("columns", [])] != want:
            report.problems.append(f"table {name}: the archive's columns differ from this schema's")
            continue
        try:
            meta = pq.ParquetFile(target).metadata
        except Exception as exc:
            report.problems.append(f"{member}: not readable as Parquet ({_reason(exc)})")
            continue
        if meta.num_rows != entry.get("rows"):
            report.problems.append(f"{member}: holds {meta.num_rows} rows, the manifest says {entry.get('rows')}")
            continue
        files[name] = target
    return files


def _python_rows(batch: pa.RecordBatch, columns: list[tuple[str, str]]) -> list[dict[str, Any]]:
    rows = batch.to_pylist()
    for name, kind in columns:
        if kind == "json":
            for row in rows:
                if row[name] is not None:
                    row[name] = json.loads(row[name])
    return rows


def _batches(path: Path, rows: int) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(path).iter_batches(batch_size=rows)


async def _restore(url: str, files: dict[str, Path], report: VerifyReport) -> None:
    from storage.db import create_engine
    from storage.migrations import upgrade

    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url, null_pool=True)
    try:
        for table in tables():
            path = files[table.name]
            columns = columns_of(table)
            batches = _batches(path, _chunk_rows(table))
            try:
                async with engine.begin() as conn:
                    while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                        rows = await asyncio.to_thread(_python_rows, batch, columns)
                        if rows:
                            await conn.execute(insert(table), rows)
            except Exception as exc:  # a constraint the rows break: say which table, not a traceback
                first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
                report.problems.append(f"table {table.name}: restore failed: {type(exc).__name__}: {first[:300]}")
                return
        checks = {c.name: c for c in report.tables}
        async with engine.connect() as conn:
            for table in tables():
                check = checks[table.name]
                check.restored_rows, digest = await table_digest(conn, table)
                check.hash_ok = digest == check.content_sha256
                if check.restored_rows != check.rows:
                    report.problems.append(f"table {table.name}: {check.restored_rows} rows restored, "
                                           f"the manifest says {check.rows}")
                elif not check.hash_ok:
                    report.problems.append(f"table {table.name}: restored content hash differs from the manifest")
    finally:
        await engine.dispose()


def _open_archive(archive: Path, report: VerifyReport) -> zipfile.ZipFile | None:
    if not archive.is_file():
        report.problems.append(f"{archive}: no such file")
        return None
    try:
        return zipfile.ZipFile(archive)
    except Exception as exc:
        report.problems.append(f"{archive.name}: not a complete zip archive, truncated or damaged "
                               f"({_reason(exc)}; {archive.stat().st_size} bytes)")
        return None


async def verify_backup(archive: Path, workdir: Path | None = None) -> VerifyReport:
    """Check the archive (manifest, members' sha256), restore it into a throwaway SQLite database at head
    and compare row counts and content hashes. Problems are listed in the report, never raised."""
    with tempfile.TemporaryDirectory(prefix="pd-verify-", dir=workdir) as tmp:
        return await restore_backup(archive, f"sqlite+aiosqlite:///{Path(tmp) / 'restore.db'}", workdir=Path(tmp))


async def restore_backup(archive: Path, url: str, workdir: Path | None = None) -> VerifyReport:
    """Restore the archive into the database at `url` (migrated to head first), which must hold no row yet,
    then compare row counts and content hashes with the manifest. Problems are listed, never raised; a
    database that is not empty is refused before anything is written."""
    from storage.migrations import head_revision

    report = VerifyReport(archive=archive)
    zf = await asyncio.to_thread(_open_archive, archive, report)
    if zf is None:
        return report
    with zf, tempfile.TemporaryDirectory(prefix="pd-restore-", dir=workdir) as tmp:
        try:
            manifest = read_manifest(zf)
        except BackupError as exc:
            report.problems.append(str(exc))
            return report
        report.created_at, report.revision = manifest.get("created_at"), manifest.get("alembic_revision")
        head = head_revision()
        if report.revision != head:
            report.problems.append(f"the archive is at schema revision {report.revision}; this code restores "
                                   f"{head} only (verify it with the version that wrote it)")
            return report
        files = await asyncio.to_thread(_check_members, zf, manifest, Path(tmp), report)
        if report.problems:
            return report
        if occupied := await _rows_present(url):
            report.problems.append(f"the target database is not empty ({occupied}): restore into an empty one")
            return report
        await _restore(url, files, report)
    return report


async def _rows_present(url: str) -> str | None:
    """Which table of ours already holds rows at `url` (None: none does, or the database is new)."""
    from sqlalchemy import func, inspect, select

    from storage.db import create_engine

    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            present = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            for table in tables():
                if table.name in present and (n := await conn.scalar(select(func.count()).select_from(table))):
                    return f"table {table.name} has {n} rows"
    finally:
        await engine.dispose()
    return None


# -- retention -----------------------------------------------------------------------------------------------


T = TypeVar("T")


def kept(archives: list[tuple[datetime, T]], now: datetime, daily: int = 7, weekly: int = 4) -> set[T]:
    """The retention rule (local files and the off-site bucket alike): the newest archive of each of the last
    `daily` UTC days and of each of the last `weekly` ISO weeks (today and this week included); one written
    by a clock ahead of ours is not this rule's to judge."""
    now = now.astimezone(UTC)
    days = {now.date() - timedelta(days=k) for k in range(daily)}
    weeks = {_week(now.date() - timedelta(weeks=k)) for k in range(weekly)}
    keep: set[T] = set()
    seen_days: set[date] = set()
    seen_weeks: set[tuple[int, int]] = set()
    for at, item in sorted(archives, key=lambda a: a[0], reverse=True):
        if at > now:
            keep.add(item)
            continue
        day, week = at.date(), _week(at.date())
        if day in days and day not in seen_days:
            keep.add(item)
            seen_days.add(day)
        if week in weeks and week not in seen_weeks:
            keep.add(item)
            seen_weeks.add(week)
    return keep


def local_archives(directory: Path) -> list[tuple[datetime, Path]]:
    """Our archives in `directory` with the time in their names, oldest first (other files left out)."""
    return sorted((t, p) for p in directory.glob(f"{PREFIX}*{SUFFIX}") if (t := archive_time(p)))


def prune_backups(directory: Path, now: datetime, daily: int = 7, weekly: int = 4) -> list[Path]:
    """Keep what `kept` keeps; delete the other archives and partial files over a day old. Files not named
    like our archives are left alone. Returns what was deleted."""
    now = now.astimezone(UTC)
    archives = local_archives(directory)
    keep = kept(archives, now, daily, weekly)
    deleted = [p for _, p in archives if p not in keep]
    for p in directory.glob(f".{PREFIX}*{SUFFIX}.partial"):  # left by a backup that died
        m = PARTIAL.match(p.name)
        if m and datetime.strptime(m[1], STAMP).replace(tzinfo=UTC) < now - timedelta(days=1):
            deleted.append(p)
    for p in deleted:
        p.unlink(missing_ok=True)
        log.info("backup retention: deleted %s", p.name)
    return sorted(deleted)


def _week(day: date) -> tuple[int, int]:
    iso = day.isocalendar()
    return iso.year, iso.week
