"""`python -m bot backup [--dir DIR] [--prune]` and `python -m bot backup verify ARCHIVE`.

`backup` writes every table to one archive (storage/backup.py: Parquet per table and a manifest with row
counts and sha256) under DIR (default: DATA_DIR/backups) and prints its path; it refuses a database that is
not at head (exit 3). `backup verify` checks the archive's hashes, restores it into a throwaway SQLite
database and compares row counts and content hashes: exit 0 when everything matches, 1 with one line per
problem otherwise (a truncated or altered archive says which member is wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.cli import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, CliError, SettingsFn, database, run_command


def register(subparsers: Any, settings: SettingsFn) -> None:
    """Add `backup` and `backup verify` to the `python -m bot` parser."""
    backup = subparsers.add_parser(
        "backup", help="archive every table (Parquet + manifest); `backup verify ARCHIVE` restores and compares",
        description="Without a subcommand: write a new archive of every table.")
    backup.add_argument("--dir", type=Path, help="where archives go (default: DATA_DIR/backups)")
    backup.add_argument("--prune", action="store_true",
                        help="afterwards keep the newest archive of each of the last 7 days and 4 ISO weeks, "
                             "delete the rest")
    backup.set_defaults(func=lambda args: _create(args, settings))
    sub = backup.add_subparsers(dest="backup_command", metavar="{verify}")
    verify = sub.add_parser("verify", help="check an archive by restoring it into a throwaway SQLite database")
    verify.add_argument("archive", type=Path)
    verify.set_defaults(func=_verify)


def _create(args: argparse.Namespace, settings_fn: SettingsFn) -> int:
    settings = settings_fn()
    directory = args.dir or settings.data_dir / "backups"
    return run_command(lambda: asyncio.run(_create_async(settings.database_url, directory, args.prune)),
                       interrupted="interrupted (no archive was written)")


async def _create_async(url: str, directory: Path, prune: bool) -> int:
    from storage.backup import BackupError, create_backup, prune_backups, read_manifest

    now = datetime.now(UTC)
    try:
        async with database(url, "backup", null_pool=True, outcome="no archive was written") as engine:
            path = await create_backup(engine, directory, now)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    import zipfile

    with zipfile.ZipFile(path) as zf:
        manifest = read_manifest(zf)
    rows = sum(t["rows"] for t in manifest["tables"])
    busiest = sorted(manifest["tables"], key=lambda t: -t["rows"])[:4]
    print(f"{path}: {len(manifest['tables'])} tables, {rows} rows, {path.stat().st_size} bytes "
          f"({', '.join('{} {}'.format(t['name'], t['rows']) for t in busiest if t['rows'])})")
    if prune:
        for gone in prune_backups(directory, now):
            print(f"pruned {gone}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from storage.backup import verify_backup

    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrating the throwaway database is routine
    try:
        report = asyncio.run(verify_backup(args.archive))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    for check in report.tables:
        if check.restored_rows is not None:
            state = "ok" if check.ok else "MISMATCH"
            print(f"  {check.name}: {check.rows} rows, restored {check.restored_rows}, content hash {state}")
    if not report.ok:
        for problem in report.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"error: {args.archive}: verification FAILED", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.archive}: OK — {len(report.tables)} tables, {report.rows} rows restored into a fresh SQLite "
          f"database; row counts and content hashes match (written {report.created_at}, schema {report.revision})")
    return EXIT_OK
