"""`python -m bot backup [--dir DIR] [--prune] [--offsite]`, `backup verify ARCHIVE`, `backup list [--offsite]` and
`backup restore ARCHIVE|s3:NAME|s3:latest --db URL`.

`backup` writes every table to one archive (storage/backup.py: Parquet per table and a manifest with row
counts and sha256) under DIR (default: DATA_DIR/backups) and prints its path; it refuses a database that is
not at head (exit 3). `backup verify` checks the archive's hashes, restores it into a throwaway SQLite
database and compares row counts and content hashes: exit 0 when everything matches, 1 with one line per
problem otherwise (a truncated or altered archive says which member is wrong). `backup restore` does the
same into the database at URL, which must be empty, fetching the archive from the off-site bucket
(BACKUP_S3_URL) first when it is named `s3:NAME` (`s3:latest`: the newest).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bot.cli import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, CliError, SettingsFn, database, run_command

if TYPE_CHECKING:
    from storage.backup import VerifyReport
    from storage.offsite import Offsite

T = TypeVar("T")


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
    backup.add_argument("--offsite", action="store_true", help="also upload the archive to BACKUP_S3_URL")
    sub = backup.add_subparsers(dest="backup_command", metavar="{verify,list,restore}")
    verify = sub.add_parser("verify", help="check an archive by restoring it into a throwaway SQLite database")
    verify.add_argument("archive", type=Path)
    verify.set_defaults(func=_verify)
    listing = sub.add_parser("list", help="the archives on this disk, or with --offsite in BACKUP_S3_URL")
    listing.add_argument("--dir", type=Path, help="where archives are (default: DATA_DIR/backups)")
    listing.add_argument("--offsite", action="store_true", help="list the off-site bucket instead")
    listing.set_defaults(func=lambda args: _list(args, settings))
    restore = sub.add_parser("restore", help="restore an archive (a path, or s3:NAME / s3:latest from BACKUP_S3_URL) "
                                             "into an empty database, then compare counts and hashes")
    restore.add_argument("source", help="an archive file, or s3:NAME, or s3:latest")
    restore.add_argument("--db", required=True, help="the empty database to restore into (a URL)")
    restore.set_defaults(func=lambda args: _restore(args, settings))


def _offsite(settings: Any) -> Offsite:
    if not settings.backup_s3_url:
        raise CliError("no off-site place: set BACKUP_S3_URL=s3://bucket[/prefix] (and the AWS_* credentials)")
    from storage.offsite import Offsite

    return Offsite(settings.backup_s3_url, settings.backup_s3_endpoint, settings.backup_s3_region)


def _create(args: argparse.Namespace, settings_fn: SettingsFn) -> int:
    settings = settings_fn()
    directory = args.dir or settings.backups
    offsite = _offsite(settings) if args.offsite else None
    return run_command(lambda: asyncio.run(_create_async(settings.database_url, directory, args.prune, offsite)),
                       interrupted="interrupted (no archive was written)")


def _list(args: argparse.Namespace, settings_fn: SettingsFn) -> int:
    from storage.backup import local_archives

    settings = settings_fn()
    if args.offsite:
        offsite = _offsite(settings)
        names = run_offsite(lambda: offsite.names())
        where = str(offsite.place)
    else:
        directory = args.dir or settings.backups
        names = [p.name for _, p in local_archives(directory)]
        where = str(directory)
    for name in names:
        print(name)
    print(f"{len(names)} archive(s) in {where}", file=sys.stderr)
    return EXIT_OK


def run_offsite(call: Callable[[], T]) -> T:
    from storage.offsite import OffsiteError

    try:
        return call()
    except OffsiteError as exc:
        raise CliError(str(exc)) from None


def _restore(args: argparse.Namespace, settings_fn: SettingsFn) -> int:
    from bot.settings import normalize_database_url
    from storage.backup import restore_backup

    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = settings_fn()

    def go() -> int:
        with tempfile.TemporaryDirectory(prefix="pd-fetch-") as tmp:
            if args.source.startswith("s3:"):
                offsite = _offsite(settings)
                archive = run_offsite(lambda: offsite.download(args.source.removeprefix("s3:"), Path(tmp)))
                print(f"fetched {archive.name} from {offsite.place}")
            else:
                archive = Path(args.source)
            report = asyncio.run(restore_backup(archive, normalize_database_url(args.db)))
            return _print_report(report, archive, "restored into the target database")

    return run_command(go, interrupted="interrupted (the target database may hold part of the archive)")


async def _create_async(url: str, directory: Path, prune: bool, offsite: Offsite | None = None) -> int:
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
    if offsite is not None:
        key = run_offsite(lambda: offsite.upload(path))
        print(f"uploaded to s3://{offsite.place.bucket}/{key}")
    if prune:
        for gone in prune_backups(directory, now):
            print(f"pruned {gone}")
        for name in run_offsite(lambda: offsite.prune(now)) if offsite is not None else []:
            print(f"pruned off-site {name}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from storage.backup import verify_backup

    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrating the throwaway database is routine
    try:
        report = asyncio.run(verify_backup(args.archive))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _print_report(report, args.archive, "restored into a fresh SQLite database")


def _print_report(report: VerifyReport, archive: Path, where: str) -> int:
    for check in report.tables:
        if check.restored_rows is not None:
            state = "ok" if check.ok else "MISMATCH"
            print(f"  {check.name}: {check.rows} rows, restored {check.restored_rows}, content hash {state}")
    if not report.ok:
        for problem in report.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"error: {archive}: verification FAILED", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{archive}: OK — {len(report.tables)} tables, {report.rows} rows {where}; row counts and content "
          f"hashes match (written {report.created_at}, schema {report.revision})")
    return EXIT_OK
