"""Backups of a replayed desk on SQLite and PostgreSQL: the archive restores and verifies; a truncated or
altered archive fails with a message naming what is wrong; retention keeps 7 daily and 4 weekly archives;
the storage health figures and thresholds."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select, text

from bot.settings import Settings
from core.trader import Notice
from jobs.backup import daily_backup
from storage.backup import (
    BackupError,
    archive_name,
    archive_time,
    create_backup,
    prune_backups,
    table_digest,
    tables,
    verify_backup,
)
from storage.db import create_engine
from storage.health import HISTORY_FILE, StorageLimits, storage_health, thresholds_exceeded
from storage.migrations import upgrade
from storage.models import Base, MLModel, Trade
from storage.offsite import Offsite, OffsiteError
from tests.conftest import CANDLES
from tests.hostproc import desk_env, run

DATA = str(CANDLES / "binance_spot_2020-12_2021-07")
NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)


def replay_into(url: str, cwd: Path) -> None:
    """Fill the database the way the desk does: the real engine over three weeks of candles."""
    done = run(["replay", "--data", DATA, "--from", "2021-03-01", "--to", "2021-03-20", "--db", url, "--json"],
               cwd, desk_env(SECRET_KEY="k" * 40), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


async def counts(url: str) -> dict[str, int]:
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            return {t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
                    for t in tables()}
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def replayed_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("replayed")
    url = f"sqlite+aiosqlite:///{root / 'desk.db'}"
    replay_into(url, root)
    return url


@pytest.fixture(scope="module")
def sqlite_archive(replayed_sqlite: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    async def make() -> Path:
        engine = create_engine(replayed_sqlite, null_pool=True)
        try:
            return await create_backup(engine, tmp_path_factory.mktemp("archives"), NOW)
        finally:
            await engine.dispose()

    return asyncio.run(make())


async def test_backup_of_a_replayed_desk_verifies(db_url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(replay_into, db_url, tmp_path)
    before = await counts(db_url)
    assert before["signals"] > 100 and before["phantom_trades"] == before["signals"]
    assert before["trades"] > 10 and before["orders"] >= before["trades"] and before["ml_models"] > 0
    assert before["bots"] == 1 and before["bot_states"] >= 1 and before["trade_stats_cache"] == 3

    engine = create_engine(db_url, null_pool=True)
    try:
        archive = await create_backup(engine, tmp_path / "backups", NOW)
        async with engine.connect() as conn:
            source_digests = {t.name: await table_digest(conn, t) for t in tables()}
            trade = (await conn.execute(select(Trade).order_by(Trade.id).limit(1))).one()
            model = (await conn.execute(select(MLModel).order_by(MLModel.id).limit(1))).one()
        with pytest.raises(BackupError, match="already exists"):  # never overwrites an archive
            await create_backup(engine, tmp_path / "backups", NOW)
    finally:
        await engine.dispose()
    assert archive.name == "phantomdesk-20260318T120000Z.zip"
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]  # no partial file left behind

    with zipfile.ZipFile(archive) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert [t["name"] for t in manifest["tables"]] == [t.name for t in tables()]  # parents first
        for entry in manifest["tables"]:
            data = zf.read(entry["member"])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
            assert entry["rows"] == before[entry["name"]]
            assert (entry["rows"], entry["content_sha256"]) == source_digests[entry["name"]]
        trades = pq.read_table(io.BytesIO(zf.read("tables/trades.parquet")))
        models = pq.read_table(io.BytesIO(zf.read("tables/ml_models.parquet")))
    assert manifest["alembic_revision"] and manifest["source"]["dialect"] in {"sqlite", "postgresql"}
    assert manifest["source"]["database_bytes"] > 0
    # types survive: exact decimals, UTC times, JSON as text, bytes as bytes
    first = trades.sort_by("id").slice(0, 1).to_pylist()[0]
    assert first["entry_price"] == trade.entry_price and isinstance(first["entry_price"], Decimal)
    assert first["entry_time"] == trade.entry_time and first["entry_time"].tzinfo is not None
    first_model = models.sort_by("id").slice(0, 1).to_pylist()[0]
    assert first_model["artifact"] == model.artifact and json.loads(first_model["metrics"]) == model.metrics

    report = await verify_backup(archive)
    assert report.ok, report.problems
    assert {c.name: c.restored_rows for c in report.tables} == before
    assert all(c.hash_ok for c in report.tables)
    assert report.rows == sum(before.values())


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def _member_offset(archive: Path, member: str) -> int:
    """Where the member's stored bytes start (after its local header)."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    raw = archive.read_bytes()
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    return info.header_offset + 30 + name_len + extra_len


async def test_truncated_and_altered_archives_fail_with_a_clear_message(sqlite_archive: Path, tmp_path: Path) -> None:
    data = await asyncio.to_thread(sqlite_archive.read_bytes)

    async def problems(blob: bytes, name: str = "damaged.zip") -> list[str]:
        path = tmp_path / name
        path.write_bytes(blob)
        report = await verify_backup(path)
        assert not report.ok
        return report.problems

    for cut in (len(data) // 2, len(data) - 10, 100):
        found = await problems(data[:cut])  # the zip reason varies with what the cut lands on
        assert len(found) == 1 and found[0].endswith(f"; {cut} bytes)"), found
        assert found[0].startswith("damaged.zip: not a complete zip archive, truncated or damaged (BadZipFile: ")

    start = _member_offset(sqlite_archive, "tables/signals.parquet")
    found = await problems(_flip(data, start + 500))
    assert found == ["tables/signals.parquet: damaged (BadZipFile: Bad CRC-32 for file 'tables/signals.parquet')"]

    # altered with care (CRC recomputed, as a re-zipping tool would): the manifest's sha256 catches it
    with zipfile.ZipFile(sqlite_archive) as src:
        members = {i.filename: src.read(i.filename) for i in src.infolist()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for name, blob in members.items():
            dst.writestr(name, _flip(blob, 300) if name == "tables/trades.parquet" else blob)
    found = await problems(buf.getvalue())
    assert len(found) == 1 and found[0].startswith("tables/trades.parquet: sha256 "), found
    assert found[0].endswith("altered or damaged")

    # a member dropped, a manifest lost
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for name, blob in members.items():
            if name != "tables/orders.parquet":
                dst.writestr(name, blob)
    assert await problems(buf.getvalue()) == ["tables/orders.parquet: missing from the archive"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        dst.writestr("tables/bots.parquet", members["tables/bots.parquet"])
    assert (await problems(buf.getvalue()))[0].startswith("no manifest.json in the archive")
    assert (await problems(b"", "empty.zip"))[0].startswith("empty.zip: not a complete zip archive")


async def test_restore_checks_rows_not_only_bytes(sqlite_archive: Path, tmp_path: Path) -> None:
    """A manifest rewritten to match altered members still fails: the restored content differs."""
    with zipfile.ZipFile(sqlite_archive) as src:
        members = {i.filename: src.read(i.filename) for i in src.infolist()}
    table = pq.read_table(io.BytesIO(members["tables/bots.parquet"]))
    rows = table.to_pylist()
    rows[0]["name"] = "someone else's bot"
    out = io.BytesIO()
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), out, compression="zstd")
    members["tables/bots.parquet"] = out.getvalue()
    manifest = json.loads(members["manifest.json"])
    entry = next(t for t in manifest["tables"] if t["name"] == "bots")
    entry.update(sha256=hashlib.sha256(out.getvalue()).hexdigest(), bytes=len(out.getvalue()))
    members["manifest.json"] = json.dumps(manifest).encode()
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(forged, "w") as dst:
        for name, blob in members.items():
            dst.writestr(name, blob)
    report = await verify_backup(forged)
    assert report.problems == ["table bots: restored content hash differs from the manifest"]


def test_retention_keeps_seven_daily_and_four_weekly(tmp_path: Path) -> None:
    # NOW is Wednesday 2026-03-18 (ISO week 12); two archives a day since mid-January
    made = []
    for day in range(60):
        for hour in (1, 13):
            at = datetime(2026, 1, 18, hour, tzinfo=UTC) + timedelta(days=day)
            if at <= NOW:
                made.append(at)
    future = NOW + timedelta(hours=20)
    for at in [*made, future]:
        (tmp_path / archive_name(at)).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an archive")
    (tmp_path / ".phantomdesk-20260310T000000Z.zip.partial").write_bytes(b"x")  # a backup that died a week ago
    (tmp_path / ".phantomdesk-20260318T113000Z.zip.partial").write_bytes(b"x")  # one writing right now

    deleted = prune_backups(tmp_path, NOW)

    def at(day: int, hour: int) -> str:
        return archive_name(datetime(2026, 3, day, hour, tzinfo=UTC))

    kept = sorted(p.name for p in tmp_path.iterdir())
    daily = [at(d, 13) for d in range(12, 18)] + [at(18, 1)]  # today's 13:00 is after NOW: not made
    weekly = [at(8, 13), at(1, 13)]  # newest of weeks 10 and 9; weeks 12 and 11 are covered by the daily ones
    assert kept == sorted([*daily, *weekly, archive_name(future), "notes.txt",
                           ".phantomdesk-20260318T113000Z.zip.partial"])
    assert len(deleted) == len(made) - len(daily) - len(weekly) + 1  # + the old partial file
    assert prune_backups(tmp_path, NOW) == []  # a second run has nothing to do


async def test_daily_backup_job_writes_verifies_and_prunes(replayed_sqlite: str, tmp_path: Path) -> None:
    directory = tmp_path / "backups"
    directory.mkdir()
    old = directory / archive_name(NOW - timedelta(days=40))
    old.write_bytes(b"x")
    engine = create_engine(replayed_sqlite, null_pool=True)
    try:
        done = await daily_backup(engine, directory, now=NOW)
    finally:
        await engine.dispose()
    assert done["verified"] and done["rows"] > 500 and done["deleted"] == [old.name]
    assert sorted(p.name for p in directory.iterdir()) == [archive_name(NOW)]


def test_backup_cli_and_verify_cli(replayed_sqlite: str, tmp_path: Path) -> None:
    env = desk_env(DATABASE_URL=replayed_sqlite)
    done = run(["backup", "--dir", str(tmp_path / "out")], tmp_path, env)
    assert done.returncode == 0, done.stderr
    archive = Path(done.stdout.split(":")[0])
    assert archive.parent == tmp_path / "out" and archive.name.startswith("phantomdesk-")
    assert f"{len(Base.metadata.tables)} tables" in done.stdout  # every table of the schema

    ok = run(["backup", "verify", str(archive)], tmp_path, env)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and "row counts and content hashes match" in ok.stdout
    assert "  signals: " in ok.stdout and "content hash ok" in ok.stdout

    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[:-1000])
    bad = run(["backup", "verify", str(cut)], tmp_path, env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "cut.zip: not a complete zip archive, truncated or damaged" in bad.stderr
    assert "verification FAILED" in bad.stderr

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    refused = run(["backup"], fresh, desk_env())
    assert refused.returncode == 3 and "python -m bot migrate" in refused.stderr


async def test_storage_health_figures_and_thresholds(db_url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(upgrade, db_url)
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "ledger-a-1234.jsonl").write_text("x 1\nx 2\nx 3\n")
    (journal / "ledger-b-1234.jsonl").write_text("x 1\n\nx 2\n")  # blank lines are not records
    (journal / "ledger-b-1234.jsonl.corrupt").write_text("garbage\n")
    data_dir = tmp_path / "data"
    engine = create_engine(db_url, null_pool=True)
    try:
        first = await storage_health(engine, data_dir, journal, now=NOW)
        assert first["db_bytes"] > 0 and first["db_error"] is None
        assert first["db_growth_bytes"] is None  # nothing to compare with yet; now there is
        assert json.loads((data_dir / HISTORY_FILE).read_text())["samples"] == [[NOW.isoformat(), first["db_bytes"]]]
        assert (first["journal_files"], first["journal_backlog"], first["journal_corrupt_lines"]) == (2, 5, 1)
        assert 0 < first["disk_free_bytes"] <= first["disk_total_bytes"] and 0 < first["disk_free_pct"] <= 100

        async with engine.begin() as conn:  # grow the database
            await conn.execute(text("CREATE TABLE ballast (x TEXT)"))
            for _ in range(20):
                await conn.execute(text("INSERT INTO ballast VALUES (:x)"), [{"x": "y" * 4000}] * 50)
        later = await storage_health(engine, data_dir, journal, now=NOW + timedelta(hours=30))
    finally:
        await engine.dispose()
    assert later["db_bytes"] > first["db_bytes"]
    assert later["db_growth_bytes"] == later["db_bytes"] - first["db_bytes"] and later["db_growth_window_h"] == 30
    assert later["db_growth_bytes_per_day"] == int(later["db_growth_bytes"] * 24 / 30)

    quiet = StorageLimits(min_free_disk_pct=None, max_journal_backlog=5, max_journal_corrupt_lines=1)
    assert thresholds_exceeded(later, quiet) == []
    alerts = thresholds_exceeded(later, StorageLimits(min_free_disk_pct=100.5, max_journal_backlog=4,
                                                      max_db_bytes=1000, max_db_growth_bytes_per_day=1000))
    assert len(alerts) == 5
    assert alerts[0].startswith("free disk ") and "is below 100.5%" in alerts[0]
    assert alerts[1] == "journal backlog 5 records is above 4 (ledger records are waiting for the database)"
    assert alerts[2].startswith("the journal holds 1 corrupt line(s)")
    assert alerts[3].startswith("database size ") and alerts[3].endswith("is above 1000 B")
    assert alerts[4].startswith("database grows ")


# --- off-site: a real S3-compatible server (moto's, started by the test command) ----------------------------
S3_ENV = {"AWS_ACCESS_KEY_ID": "desk-test", "AWS_SECRET_ACCESS_KEY": "desk-test-secret",
          "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def bucket(s3_server_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the test S3 server; boto3 finds the credentials in the environment, as in production."""
    import boto3

    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    name = f"desk-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server_url).create_bucket(Bucket=name)
    return name


def _objects(s3_server_url: str, bucket: str) -> dict[str, bytes]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server_url)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


async def test_the_daily_archive_leaves_the_box_and_restores_from_there(replayed_sqlite: str, pg_url: str,
                                                                         tmp_path: Path, s3_server_url: str,
                                                                         bucket: str) -> None:
    import boto3

    old = archive_name(NOW - timedelta(days=40))  # beyond retention, in the bucket and on the disk
    boto3.client("s3", endpoint_url=s3_server_url).put_object(Bucket=bucket, Key=f"desk/{old}", Body=b"x")
    boto3.client("s3", endpoint_url=s3_server_url).put_object(Bucket=bucket, Key="desk/notes.txt", Body=b"mine")
    offsite = Offsite(f"s3://{bucket}/desk", s3_server_url)
    engine = create_engine(replayed_sqlite, null_pool=True)
    try:
        done = await daily_backup(engine, tmp_path / "backups", now=NOW, offsite=offsite)
    finally:
        await engine.dispose()
    local = tmp_path / "backups" / archive_name(NOW)
    assert done["offsite"] == f"desk/{archive_name(NOW)}" and done["offsite_deleted"] == [old]
    stored = _objects(s3_server_url, bucket)
    assert sorted(stored) == ["desk/notes.txt", f"desk/{archive_name(NOW)}"]  # a foreign object is left alone
    assert stored[f"desk/{archive_name(NOW)}"] == local.read_bytes()

    # the host is gone: a new machine restores the newest off-site archive into an empty PostgreSQL
    env = desk_env(**S3_ENV, BACKUP_S3_URL=f"s3://{bucket}/desk", BACKUP_S3_ENDPOINT=s3_server_url)
    listed = run(["backup", "list", "--offsite"], tmp_path, env)
    assert listed.returncode == 0 and listed.stdout.split() == [archive_name(NOW)], listed.stderr
    restored = run(["backup", "restore", "s3:latest", "--db", pg_url], tmp_path, env, timeout=300)
    assert restored.returncode == 0, restored.stderr[-2000:]
    assert f"fetched {archive_name(NOW)}" in restored.stdout
    assert "row counts and content hashes match" in restored.stdout
    assert await counts(pg_url) == await counts(replayed_sqlite)
    again = run(["backup", "restore", "s3:latest", "--db", pg_url], tmp_path, env, timeout=300)
    assert again.returncode == 1 and "the target database is not empty" in again.stderr
    assert await counts(pg_url) == await counts(replayed_sqlite)  # nothing written twice


async def test_a_failing_upload_is_alerted_and_the_local_archive_kept(replayed_sqlite: str, tmp_path: Path,
                                                                      s3_server_url: str, bucket: str) -> None:
    from jobs.desk_jobs import DeskJobs

    notices: list[Notice] = []
    settings = Settings(_env_file=None, data_dir=tmp_path, backup_s3_url=f"s3://{bucket}-gone/desk",
                        backup_s3_endpoint=s3_server_url)
    engine = create_engine(replayed_sqlite, null_pool=True)
    try:
        jobs = DeskJobs(SimpleNamespace(db=engine, settings=settings, notify=notices.append))  # type: ignore[arg-type]
        with pytest.raises(OffsiteError, match=rf"s3://{bucket}-gone/desk/ failed \(NoSuchBucket"):
            await jobs.backup()
    finally:
        await engine.dispose()
    assert [n.kind for n in notices] == ["backup_offsite_failed"]
    assert "on this disk only" in notices[0].text and "desk-test-secret" not in notices[0].text
    assert len([p for p in (tmp_path / "backups").iterdir() if archive_time(p)]) == 1  # verified, kept here
