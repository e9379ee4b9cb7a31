"""The daily backup job: archive every table, verify the archive by restoring it, then apply retention
(7 daily, 4 weekly). Retention runs only after a verified backup, so a failing backup never costs the
older good ones. With an off-site place (BACKUP_S3_URL) the verified archive is uploaded and checked, and
the bucket gets the same retention. A failure raises: the scheduler records it in job_runs and alerts the
admins after three in a row; an off-site failure raises `OffsiteError`, which the desk reports at once.
The scheduler wiring comes with the scheduler (jobs/desk_jobs.py), e.g.

    JobSpec("backup", lambda: daily_backup(host.db, settings.data_dir / "backups"),
            CronTrigger(hour=0, minute=40, timezone=UTC), misfire_grace_s=3600)
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.backup import BackupError, create_backup, prune_backups, verify_backup
from storage.offsite import Offsite

log = logging.getLogger("phantomdesk.jobs")


async def daily_backup(db: AsyncEngine, directory: Path, *, now: datetime | None = None, daily: int = 7,
                       weekly: int = 4, verify: bool = True, offsite: Offsite | None = None) -> dict[str, Any]:
    """Write, verify, upload (with `offsite`) and prune; returns what it did (archive, bytes, rows, verified,
    deleted, and off-site: key, deleted)."""
    now = now or datetime.now(UTC)
    archive = await create_backup(db, directory, now)
    rows: int | None = None
    if verify:
        report = await verify_backup(archive)
        if not report.ok:
            # kept for a person to look at, under a name retention and restores do not pick up
            failed = archive.with_name(archive.name + ".failed")
            archive.rename(failed)
            raise BackupError(f"backup {archive.name} failed verification: {'; '.join(report.problems[:3])} "
                              f"(kept as {failed.name}; older archives untouched)")
        rows = report.rows
    deleted = prune_backups(directory, now, daily=daily, weekly=weekly)
    result: dict[str, Any] = {"archive": str(archive), "bytes": archive.stat().st_size, "rows": rows,
                              "verified": verify, "deleted": [p.name for p in deleted]}
    if offsite is not None:  # only a verified archive leaves the box; the bucket keeps what the disk keeps
        result["offsite"] = await asyncio.to_thread(offsite.upload, archive)
        result["offsite_deleted"] = await asyncio.to_thread(offsite.prune, now, daily, weekly)
    log.info("daily backup %s: %d bytes, %s rows, verified %s, pruned %d", archive.name, result["bytes"], rows,
             verify, len(deleted))
    return result
