"""Model artifacts: a plain format (no pickle, no code) and an HMAC-SHA256 signature.

Whoever can write to the database or Redis must not be able to make the desk run code. So:
- an artifact is a zip of `model.json` (numbers and strings) and `.npy` arrays of numbers, read with
  `allow_pickle=False`: there is nothing in it that could execute (core/ml/model.py says what it holds);
- each artifact is signed with HMAC-SHA256 under the desk's SECRET_KEY over its identity (bot,
  strategy, version) and its sha256, so an artifact cannot be altered, nor moved to another row;
- `load_verified` checks the sha256 and the signature *before* the bytes reach `parse`, which then
  accepts only the entries a model has, of bounded size.

The same model always gives the same bytes (fixed zip timestamps). The key is passed in as bytes: core
never reads the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import zipfile

import numpy as np

from core.ml.model import TREE_ARRAYS, Model

DOMAIN = b"phantomdesk/ml-model/v1"
ENTRIES = frozenset({"model.json", "iso_x.npy", "iso_y.npy", *(f"{name}.npy" for name in TREE_ARRAYS)})
MAX_BYTES = 32 << 20  # unpacked: a model is a few hundred kB at most
_DATE = (2020, 1, 1, 0, 0, 0)


class ArtifactRefused(Exception):
    """An artifact failed verification (tampered, unsigned, signed with another key, unexpected content)."""


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, _DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def dumps(model: Model) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(_entry("model.json"), json.dumps(model.document(), sort_keys=True))
        for name, array in sorted(model.arrays().items()):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            z.writestr(_entry(f"{name}.npy"), buf.getvalue())
    return out.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _message(bot_id: str, strategy: str, version: int, digest: str) -> bytes:
    return b"\n".join((DOMAIN, bot_id.encode(), strategy.encode(), str(int(version)).encode(), digest.encode()))


def sign(key: bytes, bot_id: str, strategy: str, version: int, data: bytes) -> tuple[str, str]:
    """(sha256, hmac) of an artifact, both hex."""
    if len(key) < 32:
        raise ValueError("the signing key must be at least 32 bytes")
    digest = sha256_hex(data)
    return digest, hmac.new(key, _message(bot_id, strategy, version, digest), hashlib.sha256).hexdigest()


def verify(key: bytes, bot_id: str, strategy: str, version: int, data: bytes, digest: str | None,
           mac: str | None) -> None:
    """Raise ArtifactRefused unless `data` is exactly what was signed for this bot, strategy and version."""
    if not mac:
        raise ArtifactRefused(f"{strategy} v{version}: unsigned artifact")
    actual = sha256_hex(data)
    if not digest or not hmac.compare_digest(actual, digest):
        raise ArtifactRefused(f"{strategy} v{version}: sha256 mismatch (the artifact bytes were altered)")
    want = hmac.new(key, _message(bot_id, strategy, version, actual), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, mac):
        raise ArtifactRefused(f"{strategy} v{version}: bad signature (altered, moved, or signed with another key)")


def parse(data: bytes) -> Model:
    """Read an artifact that has ALREADY been verified: only a model's entries, numbers only."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            unexpected = sorted({i.filename for i in infos} - ENTRIES)
            if unexpected:
                raise ArtifactRefused(f"artifact holds unexpected entries: {', '.join(unexpected[:5])}")
            if sum(i.file_size for i in infos) > MAX_BYTES:
                raise ArtifactRefused("artifact too large for a model")
            doc = json.loads(z.read("model.json"))
            arrays = {i.filename.removesuffix(".npy"): np.lib.format.read_array(
                io.BytesIO(z.read(i)), allow_pickle=False) for i in infos if i.filename.endswith(".npy")}
        if any(a.dtype.kind not in "biuf" for a in arrays.values()):
            raise ArtifactRefused("artifact holds arrays that are not numbers")
        return Model.from_parts(doc, arrays)
    except ArtifactRefused:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise ArtifactRefused(f"artifact is not a model: {exc}") from None


def load_verified(key: bytes, bot_id: str, strategy: str, version: int, data: bytes, digest: str | None,
                  mac: str | None) -> Model:
    """Verify, then (only then) parse."""
    verify(key, bot_id, strategy, version, data, digest, mac)
    return parse(data)
