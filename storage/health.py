"""Storage health: database size and growth, free disk, journal backlog, and the limits past which the
admins are told (the /health and /db_stats figures and the alerting job read these).

Growth needs an earlier measurement: a small JSON file under the data dir keeps one sample an hour for
a month, so "how fast is the database growing" survives restarts without a table of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

HISTORY_FILE = "storage_history.json"
SAMPLE_EVERY = timedelta(hours=1)  # /health is polled every few seconds; the file is not rewritten each time
KEEP_SAMPLES = timedelta(days=35)
GROWTH_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class StorageLimits:
    """Past these the admins are alerted; None switches a check off."""

    min_free_disk_pct: float | None = 10.0
    max_journal_backlog: int | None = 1000  # ledger records waiting for the database
    max_journal_corrupt_lines: int | None = 0  # any corrupt journal line needs a human
    max_db_bytes: int | None = None
    max_db_growth_bytes_per_day: int | None = None


def sqlite_path(db: AsyncEngine) -> Path | None:
    database = db.url.database
    if db.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


async def database_size(db: AsyncEngine) -> int | None:
    """Bytes the database takes: pg_database_size on PostgreSQL; the file and its WAL on SQLite."""
    if db.dialect.name == "postgresql":
        async with db.connect() as conn:
            return int((await conn.execute(text("SELECT pg_database_size(current_database())"))).scalar_one())
    path = sqlite_path(db)
    if path is None:
        return None
    # the WAL holds committed pages not yet checkpointed into the main file: they are part of the size
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def disk_figures(path: Path) -> dict[str, Any]:
    probe = path
    while not probe.exists() and probe != probe.parent:  # a data dir not created yet: its filesystem
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return {"disk_path": str(path), "disk_total_bytes": usage.total, "disk_free_bytes": usage.free,
            "disk_free_pct": round(100.0 * usage.free / usage.total, 2) if usage.total else None}


def journal_figures(journal_dir: Path) -> dict[str, Any]:
    """Records waiting in the local ledger journals (one per line) and lines set aside as corrupt."""
    files = backlog = corrupt = 0
    if journal_dir.is_dir():
        for path in sorted(journal_dir.rglob("*")):
            if not path.is_file():
                continue
            if path.name.endswith(".jsonl"):
                files += 1
                backlog += _count_lines(path)
            elif path.name.endswith(".corrupt"):
                corrupt += _count_lines(path)
    return {"journal_files": files, "journal_backlog": backlog, "journal_corrupt_lines": corrupt}


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:  # flushed and removed while we counted
        return 0


def _load_history(path: Path) -> list[tuple[datetime, int]]:
    try:
        doc = json.loads(path.read_text())
        return [(datetime.fromisoformat(at), int(size)) for at, size in doc.get("samples", [])]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("storage history %s unreadable (%s): starting a new one", path, exc)
        return []


def _save_history(path: Path, samples: list[tuple[datetime, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"samples": [[at.isoformat(), size] for at, size in samples]}))
    os.replace(tmp, path)


def growth(history: Path, size: int, now: datetime) -> dict[str, Any]:
    """Compare `size` with the sample about a day old (or the oldest there is) and record a new sample
    at most once an hour."""
    samples = [(at, s) for at, s in _load_history(history) if now - at <= KEEP_SAMPLES and at <= now]
    older = [(at, s) for at, s in samples if now - at >= GROWTH_WINDOW]
    base = older[-1] if older else (samples[0] if samples else None)
    out: dict[str, Any] = {"db_growth_bytes": None, "db_growth_window_h": None, "db_growth_bytes_per_day": None}
    if base is not None:
        hours = (now - base[0]).total_seconds() / 3600
        out.update(db_growth_bytes=size - base[1], db_growth_window_h=round(hours, 2))
        if hours >= 1:  # a per-day rate from a few minutes of data would be noise
            out["db_growth_bytes_per_day"] = int((size - base[1]) * 24 / hours)
    if not samples or now - samples[-1][0] >= SAMPLE_EVERY:
        try:
            _save_history(history, [*samples, (now, size)])
        except OSError as exc:
            log.warning("cannot record the database size in %s: %s", history, exc)
    return out


async def storage_health(db: AsyncEngine, data_dir: Path, journal_dir: Path, *,
                         now: datetime | None = None) -> dict[str, Any]:
    """The storage figures, flat (they go into /health as they are). A database that does not answer
    gives db_bytes None and db_error; the disk and journal figures are still there."""
    now = now or datetime.now(UTC)
    figures: dict[str, Any] = {"db_dialect": db.dialect.name, "db_bytes": None, "db_error": None}
    try:
        async with asyncio.timeout(10):
            figures["db_bytes"] = await database_size(db)
    except Exception as exc:  # the health answer must not fail because the database does not
        figures["db_error"] = type(exc).__name__
        log.warning("storage health: database size unavailable: %s", type(exc).__name__)
    if figures["db_bytes"] is not None:
        figures.update(await asyncio.to_thread(growth, data_dir / HISTORY_FILE, figures["db_bytes"], now))
    else:
        figures.update(db_growth_bytes=None, db_growth_window_h=None, db_growth_bytes_per_day=None)
    figures.update(await asyncio.to_thread(disk_figures, data_dir))
    figures.update(await asyncio.to_thread(journal_figures, journal_dir))
    return figures


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    sign, n = ("-" if n < 0 else ""), abs(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def thresholds_exceeded(figures: dict[str, Any], limits: StorageLimits) -> list[str]:
    """One sentence per limit crossed, for the health endpoint and the admins' alert; [] when all is well."""
    out = []
    free_pct = figures.get("disk_free_pct")
    if limits.min_free_disk_pct is not None and free_pct is not None and free_pct < limits.min_free_disk_pct:
        out.append(f"free disk {free_pct:.1f}% ({human_bytes(figures.get('disk_free_bytes'))} of "
                   f"{human_bytes(figures.get('disk_total_bytes'))}) on {figures.get('disk_path')} is below "
                   f"{limits.min_free_disk_pct:g}%")
    backlog = figures.get("journal_backlog")
    if limits.max_journal_backlog is not None and backlog is not None and backlog > limits.max_journal_backlog:
        out.append(f"journal backlog {backlog} records is above {limits.max_journal_backlog} "
                   "(ledger records are waiting for the database)")
    corrupt = figures.get("journal_corrupt_lines")
    if (limits.max_journal_corrupt_lines is not None and corrupt is not None
            and corrupt > limits.max_journal_corrupt_lines):
        out.append(f"the journal holds {corrupt} corrupt line(s) (see the .corrupt files): a person must look")
    size = figures.get("db_bytes")
    if limits.max_db_bytes is not None and size is not None and size > limits.max_db_bytes:
        out.append(f"database size {human_bytes(size)} is above {human_bytes(limits.max_db_bytes)}")
    rate, max_rate = figures.get("db_growth_bytes_per_day"), limits.max_db_growth_bytes_per_day
    if max_rate is not None and rate is not None and rate > max_rate:
        out.append(f"database grows {human_bytes(rate)}/day, above {human_bytes(max_rate)}/day")
    return out
