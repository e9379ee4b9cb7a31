"""Model artifacts: safe serialization (skops, no pickle) and an HMAC-SHA256 signature.

Whoever can write to the database or Redis must not be able to make the desk run code. So:
- artifacts are skops files (a zip of JSON + numpy arrays; loading never unpickles) holding plain
  containers, arrays and scikit-learn objects only;
- each artifact is signed with HMAC-SHA256 under the desk's SECRET_KEY over its identity (bot,
  strategy, version) and its sha256, so an artifact cannot be altered, nor moved to another row;
- `load_verified` checks the sha256 and the signature *before* the bytes reach any parser, and then
  accepts only the object types listed in ALLOWED_TYPES.

The key is passed in as bytes: core never reads the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import zipfile

import skops.io as sio

from core.ml.model import Ensemble

# the types skops does not trust by default that a model of ours contains (see Ensemble.payload)
ALLOWED_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
})
DOMAIN = b"phantomdesk/ml-model/v1"


class ArtifactRefused(Exception):
    """An artifact failed verification (tampered, unsigned, signed with another key, unexpected content)."""


def dumps(model: Ensemble) -> bytes:
    return sio.dumps(model.payload(), compression=zipfile.ZIP_DEFLATED)


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


def loads_trusted(data: bytes) -> Ensemble:
    """Parse an artifact that has ALREADY been verified; refuse any type outside ALLOWED_TYPES."""
    untrusted = sio.get_untrusted_types(data=data)
    unexpected = sorted(set(untrusted) - ALLOWED_TYPES)
    if unexpected:
        raise ArtifactRefused(f"artifact holds unexpected types: {', '.join(unexpected[:5])}")
    payload = sio.loads(data, trusted=untrusted)
    if not isinstance(payload, dict):
        raise ArtifactRefused("artifact is not a model payload")
    try:
        return Ensemble.from_payload(payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactRefused(f"artifact is not a model payload: {exc}") from None


def load_verified(key: bytes, bot_id: str, strategy: str, version: int, data: bytes, digest: str | None,
                  mac: str | None) -> Ensemble:
    """Verify, then (only then) parse."""
    verify(key, bot_id, strategy, version, data, digest, mac)
    return loads_trusted(data)
