"""Off-site copies of the verified daily archives, in an S3-compatible bucket (AWS S3, Cloudflare R2, Backblaze
B2, MinIO, ...): a redeploy that loses the container's disk keeps them.

- `BACKUP_S3_URL=s3://bucket[/prefix]` names the place; `BACKUP_S3_ENDPOINT` an S3-compatible service's
  address (unset: AWS); `BACKUP_S3_REGION` its region. Credentials come from the environment as boto3
  reads them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, or the instance's role): never in settings,
  logs or the database.
- An upload is checked after the fact: the object's size and the sha256 it carries as metadata must be the
  archive's. A download is checked the same way before anything reads it.
- Retention is the local rule (storage/backup.py `kept`): the newest archive of each of the last 7 days and
  4 ISO weeks; other archives under the prefix are deleted, foreign objects left alone.
- boto3 is synchronous: the desk calls these methods in a thread. Every failure is one `OffsiteError` naming
  the bucket and what the service said.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from storage.backup import archive_time, kept

log = logging.getLogger("phantomdesk.backup")

DIGEST_KEY = "sha256"  # user metadata: x-amz-meta-sha256


class OffsiteError(Exception):
    """An off-site backup step failed; the message names the bucket and the service's answer."""


@dataclass(frozen=True)
class Place:
    bucket: str
    prefix: str  # "" or ending in "/"

    @classmethod
    def parse(cls, url: str) -> Place:
        """s3://bucket[/prefix] -> Place; ValueError naming what is wrong."""
        parts = urlsplit(url.strip())
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("must look like s3://bucket or s3://bucket/prefix")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment (credentials belong in AWS_* variables)")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Offsite:
    def __init__(self, url: str, endpoint: str | None = None, region: str | None = None) -> None:
        import boto3  # here: only a desk with off-site backups pays for the import
        from botocore.config import Config

        self.place = Place.parse(url)
        self.client: Any = boto3.client(
            "s3", endpoint_url=endpoint, region_name=region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            config=Config(connect_timeout=10, read_timeout=120, retries={"max_attempts": 4, "mode": "standard"}))

    def _key(self, name: str) -> str:
        return f"{self.place.prefix}{name}"

    def _fail(self, action: str, exc: Exception) -> OffsiteError:
        from botocore.exceptions import ClientError

        if isinstance(exc.__context__, ClientError):  # boto3's transfer wraps the service's answer
            exc = exc.__context__
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            said = f"{error.get('Code', '?')}: {error.get('Message') or 'no message'}"
        else:
            said = f"{type(exc).__name__}: {exc}"
        return OffsiteError(f"off-site backup: {action} {self.place} failed ({said})")

    def upload(self, archive: Path) -> str:
        """Upload and check; returns the object's key."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        key, digest, size = self._key(archive.name), sha256_of(archive), archive.stat().st_size
        try:
            self.client.upload_file(str(archive), self.place.bucket, key,
                                    ExtraArgs={"Metadata": {DIGEST_KEY: digest}})
            head = self.client.head_object(Bucket=self.place.bucket, Key=key)
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise self._fail(f"uploading {archive.name} to", exc) from None
        stored = head.get("Metadata", {}).get(DIGEST_KEY)
        if head.get("ContentLength") != size or stored != digest:
            raise OffsiteError(f"off-site backup: {archive.name} in {self.place} is not what was sent "
                               f"({head.get('ContentLength')} bytes, sha256 {stored})")
        log.info("off-site backup: %s uploaded to %s (%d bytes)", archive.name, self.place, size)
        return key

    def names(self) -> list[str]:
        """The archives under the prefix, oldest first (foreign objects left out)."""
        from botocore.exceptions import BotoCoreError, ClientError

        names = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.place.bucket,
                                                                             Prefix=self.place.prefix):
                names += [o["Key"][len(self.place.prefix):] for o in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("listing", exc) from None
        return sorted(n for n in names if "/" not in n and archive_time(Path(n)) is not None)

    def download(self, name: str, directory: Path) -> Path:
        """`name` ("latest": the newest) into `directory`, checked against the sha256 it was uploaded with."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        if name == "latest":
            names = self.names()
            if not names:
                raise OffsiteError(f"off-site backup: no archive in {self.place}")
            name = names[-1]
        if archive_time(Path(name)) is None:
            raise OffsiteError(f"off-site backup: {name!r} is not an archive name (see `backup list --offsite`)")
        target, partial = directory / name, directory / f".{name}.download"
        directory.mkdir(parents=True, exist_ok=True)
        try:
            head = self.client.head_object(Bucket=self.place.bucket, Key=self._key(name))
            self.client.download_file(self.place.bucket, self._key(name), str(partial))
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            partial.unlink(missing_ok=True)
            raise self._fail(f"fetching {name} from", exc) from None
        expected = head.get("Metadata", {}).get(DIGEST_KEY)
        if expected is not None and sha256_of(partial) != expected:
            partial.unlink(missing_ok=True)
            raise OffsiteError(f"off-site backup: {name} from {self.place} does not match the sha256 it was "
                               "uploaded with")
        partial.replace(target)
        return target

    def prune(self, now: datetime, daily: int = 7, weekly: int = 4) -> list[str]:
        """Apply the local retention rule to the bucket; returns the names deleted."""
        from botocore.exceptions import BotoCoreError, ClientError

        archives = [(t, n) for n in self.names() if (t := archive_time(Path(n))) is not None]
        keep = kept(archives, now, daily, weekly)
        gone = [n for _, n in archives if n not in keep]
        try:
            for name in gone:
                self.client.delete_object(Bucket=self.place.bucket, Key=self._key(name))
                log.info("off-site backup retention: deleted %s", name)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("pruning", exc) from None
        return gone
