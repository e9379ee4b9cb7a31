"""The local journal: where ledger records go when the database does not answer.

One record per line, `<sha256[:16]> <json>`, appended, flushed and fsynced before `append` returns.
Reading verifies every line's checksum; a line that fails (torn write, disk corruption, a hand edit)
is reported with its position and copied to `<name>.corrupt`, never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(encode(doc))
            f.flush()
            os.fsync(f.fileno())

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
                bad.append(CorruptLine(n, str(exc), line))
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
        with tmp.open("w", encoding="utf-8") as f:
            for doc in remaining:
                f.write(encode(doc))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
