"""The local journal never tears: an append that fails part-way leaves nothing behind (or the next append
cuts what it left), and a torn tail glued to a good record by an older version gives that record back."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from storage.journal import Journal, encode

A, B, C = ({"kind": "open", "n": n} for n in (1, 2, 3))


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, nbytes: int) -> None:
    """os.write in the journal writes `nbytes` of the first call, then the disk is full."""
    real = os.write
    left = [nbytes]

    def write(fd: int, data: bytes) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(data[:left[0]]))
        left[0] -= n
        return n

    monkeypatch.setattr("storage.journal.os.write", write)


def test_a_failed_append_is_cut_back_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path / "ledger.jsonl")
    journal.append(A)
    before = journal.path.read_bytes()
    with monkeypatch.context() as m:
        _disk_full_after(m, 10)  # part of B reaches the file, then ENOSPC
        with pytest.raises(OSError) as failed:
            journal.append(B)
    assert failed.value.errno == errno.ENOSPC
    assert journal.path.read_bytes() == before  # nothing partial left
    journal.append(C)
    assert journal.read() == ([(1, A), (2, C)], [])


def test_a_torn_tail_the_failed_append_could_not_cut_is_cut_by_the_next(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path / "ledger.jsonl")
    journal.append(A)
    with monkeypatch.context() as m:
        _disk_full_after(m, 10)

        def no_truncate(fd: int, size: int) -> None:
            raise OSError(errno.EIO, "truncate failed too")

        m.setattr("storage.journal.os.ftruncate", no_truncate)
        with pytest.raises(OSError):
            journal.append(B)
    assert journal.path.read_bytes() == encode(A).encode() + encode(B).encode()[:10]  # the torn tail is there
    journal.append(C)  # cuts it first
    assert journal.path.read_bytes() == (encode(A) + encode(C)).encode()
    assert journal.read() == ([(1, A), (2, C)], [])
    assert journal.backlog() == 2


def test_a_record_glued_to_a_torn_tail_is_replayed(tmp_path: Path) -> None:
    """What an older version left: a torn append, then the next record written right after it."""
    journal = Journal(tmp_path / "ledger.jsonl")
    torn = encode(B)[:25]
    journal.path.write_text(encode(A) + torn + encode(C))
    good, bad = journal.read()
    assert good == [(1, A), (2, C)]  # C was acknowledged: it is replayed
    assert [(b.line, b.text) for b in bad] == [(2, torn)]  # only the garbage is set aside
    journal.set_aside(bad)
    assert [json.loads(x)["text"] for x in journal.corrupt_path.read_text().splitlines()] == [torn]


def test_a_whole_record_short_of_its_newline_is_kept_too(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "ledger.jsonl")
    journal.path.write_text(encode(A) + encode(B).rstrip("\n") + encode(C))
    assert journal.read() == ([(1, A), (2, B), (2, C)], [])


def test_garbage_without_a_record_is_still_set_aside_whole(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "ledger.jsonl")
    line = "0123456789abcdef {not json} and 0123456789abcdef {\"x\":1}"  # record-shaped, checksums wrong
    journal.path.write_text(encode(A) + line + "\n")
    good, bad = journal.read()
    assert good == [(1, A)]
    assert [(b.line, b.reason, b.text) for b in bad] == [(2, "checksum mismatch", line)]
