"""The local journal: where ledger records go when the database does not answer.

One record per line, `<sha256[:16]> <json>`, appended, flushed and fsynced before `append` returns.
An append that fails part-way (a full disk) is cut back off, so a torn tail never glues itself to the
next record; if even the cut fails, the next append cuts it first. Reading verifies every line's
checksum; a line that fails (disk corruption, a hand edit) is reported with its position and copied to
`<name>.corrupt`, never silently dropped. A line holding garbage then a valid record (a torn tail left
by an older version, glued to the record after it) gives that record, and only the garbage is set aside.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# where a record may start inside a line: 16 hex digits (its checksum) and a space
_RECORD_START = re.compile(r"(?=[0-9a-f]{16} )")


@dataclass(frozen=True, slots=True)
class CorruptLine:
    line: int
    reason: str
    text: str


def _checksum(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def encode(doc: dict[str, Any]) -> str:
    payload = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return f"{_checksum(payload)} {payload}\n"


def decode(line: str) -> dict[str, Any]:
    """The record of one line; ValueError naming what is wrong."""
    line = line.rstrip("\n")
    checksum, sep, payload = line.partition(" ")
    if not sep or len(checksum) != 16:
        raise ValueError("no checksum")
    if _checksum(payload) != checksum:
        raise ValueError("checksum mismatch")
    doc = json.loads(payload)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.corrupt_path = path.with_name(path.name + ".corrupt")

    def append(self, doc: dict[str, Any]) -> None:
        """Write one record durably, or raise OSError leaving the file as it was (no partial line)."""
        data = encode(doc).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = self._cut_torn_tail(fd)
            try:
                view = memoryview(data)
                while view:  # os.write may write less than asked (a nearly full disk)
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                self._truncate(fd, size)
                raise
        finally:
            os.close(fd)

    def _cut_torn_tail(self, fd: int) -> int:
        """The file's size once a tail not ending in a newline (an append whose cut failed) is removed."""
        size = os.fstat(fd).st_size
        if size == 0:
            return size
        os.lseek(fd, size - 1, os.SEEK_SET)  # reads follow the offset; O_APPEND writes go to the end anyway
        if os.read(fd, 1) == b"\n":
            return size
        keep = self.path.read_bytes().rfind(b"\n") + 1
        os.ftruncate(fd, keep)  # an OSError here fails the append: nothing new was written
        log.warning("journal %s: cut a torn tail of %d bytes (an append that failed; never acknowledged)",
                    self.path.name, size - keep)
        return keep

    def _truncate(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:  # the next append cuts the tail instead
            log.warning("journal %s: could not cut a failed append (%s)", self.path.name, exc)

    def backlog(self) -> int:
        if not self.path.exists():
            return 0
        return self.path.read_bytes().count(b"\n")

    def read(self) -> tuple[list[tuple[int, dict[str, Any]]], list[CorruptLine]]:
        good: list[tuple[int, dict[str, Any]]] = []
        bad: list[CorruptLine] = []
        if not self.path.exists():
            return good, bad
        # records end with "\n" only (JSON escapes every other control character): split on nothing else
        for n, raw in enumerate(self.path.read_bytes().split(b"\n"), start=1):
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            try:
                good.append((n, decode(line)))
            except ValueError as exc:
                glued = _glued(line)
                if glued is None:
                    bad.append(CorruptLine(n, str(exc), line))
                    continue
                prefix, doc = glued
                try:  # a whole record short of its newline (its append failed after writing it) is kept too
                    good.append((n, decode(prefix)))
                except ValueError:
                    if prefix.strip():
                        bad.append(CorruptLine(n, "torn write before a valid record", prefix))
                good.append((n, doc))
        return good, bad

    def set_aside(self, bad: list[CorruptLine]) -> None:
        """Keep corrupt lines (with their position) for a human, outside the replay path."""
        if not bad:
            return
        with self.corrupt_path.open("a", encoding="utf-8") as f:
            for b in bad:
                f.write(json.dumps({"file": self.path.name, "line": b.line, "reason": b.reason, "text": b.text}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for b in bad:
            log.error("journal %s line %d is corrupt (%s): kept in %s", self.path.name, b.line, b.reason,
                      self.corrupt_path.name)

    def keep_only(self, remaining: list[dict[str, Any]]) -> None:
        """Atomically replace the journal with the records still to replay (temp file + rename + fsync)."""
        if not remaining:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                for doc in remaining:
                    f.write(encode(doc))
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk: the journal stays as it was, the partial copy goes
            raise


def _glued(line: str) -> tuple[str, dict[str, Any]] | None:
    """(garbage prefix, record) when the line ends with a valid record behind a torn tail."""
    for m in _RECORD_START.finditer(line, 1):
        try:
            return line[:m.start()], decode(line[m.start():])
        except ValueError:
            continue
    return None
