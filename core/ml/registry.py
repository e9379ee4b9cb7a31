"""Where trained models live: the ModelRegistry protocol (storage/ml_registry.py implements it on the
database, with the champion's id mirrored to Redis) and an in-memory registry for tests and tools.

Every implementation verifies an artifact's signature before parsing it (core/ml/artifact.py) and
refuses a tampered or unsigned one; `load_champion` then falls back to the previous champion, or to
"no model".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from core.ml.artifact import ArtifactRefused, load_verified, sign
from core.ml.model import Ensemble

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelArtifact:
    """A trained model to store: identity, facts, serialized bytes (signed by the registry)."""

    bot_id: str
    strategy: str
    version: int
    trained_at: datetime  # data time: exit of the newest outcome it learnt from
    n_samples: int
    metrics: dict[str, Any]  # the gate report
    data: bytes


@dataclass(frozen=True)
class ModelInfo:
    bot_id: str
    strategy: str
    version: int
    trained_at: datetime
    n_samples: int
    metrics: dict[str, Any]
    is_champion: bool
    promoted_at: datetime | None
    promoted_by: str | None
    size: int = 0


@dataclass
class ChampionLoad:
    """The champion that could be loaded (None: no model) and the artifacts refused on the way."""

    model: Ensemble | None = None
    version: int | None = None
    refused: list[str] = field(default_factory=list)


class ModelRegistry(Protocol):
    async def save(self, artifact: ModelArtifact) -> bool:
        """Store and sign; idempotent (a version stored twice keeps the first). True if inserted."""
        ...

    async def set_champion(self, bot_id: str, strategy: str, version: int, *, actor: str = "system",
                           reason: str | None = None) -> bool:
        """Make `version` the champion (audited). False if it already was."""
        ...

    async def load_champion(self, bot_id: str, strategy: str, version: int | None = None) -> ChampionLoad:
        """The champion (or `version` when given), verified; refused artifacts fall back to the
        champions before it, then to no model."""
        ...

    async def list(self, bot_id: str, strategy: str | None = None) -> list[ModelInfo]: ...

    async def record_refusal(self, bot_id: str, strategy: str, version: int, report: dict[str, Any]) -> None:
        """A challenger failed the gate though it measured better (core.ml.verdict.worth_asking): ask the operator
        (promote anyway / dismiss)."""
        ...


@dataclass
class _Row:
    info: ModelInfo
    data: bytes
    sha256: str
    hmac: str
    order: int = 0  # promotion order, for "the previous champion"


class MemoryRegistry:
    """The registry without a database: the same signing and verification, rows in a dict."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.rows: dict[tuple[str, str, int], _Row] = {}
        self.refusals: list[dict[str, Any]] = []
        self._promotions = 0

    async def save(self, artifact: ModelArtifact) -> bool:
        k = (artifact.bot_id, artifact.strategy, artifact.version)
        if k in self.rows:
            return False
        digest, mac = sign(self.key, *k, artifact.data)
        info = ModelInfo(*k, artifact.trained_at, artifact.n_samples, artifact.metrics, False, None, None,
                         len(artifact.data))
        self.rows[k] = _Row(info, artifact.data, digest, mac)
        return True

    async def set_champion(self, bot_id: str, strategy: str, version: int, *, actor: str = "system",
                           reason: str | None = None) -> bool:
        row = self.rows[(bot_id, strategy, version)]
        if row.info.is_champion:
            return False
        for (b, s, _v), other in self.rows.items():
            if b == bot_id and s == strategy and other.info.is_champion:
                other.info = replace(other.info, is_champion=False)
        self._promotions += 1
        row.order = self._promotions
        row.info = replace(row.info, is_champion=True, promoted_by=actor)
        return True

    async def load_champion(self, bot_id: str, strategy: str, version: int | None = None) -> ChampionLoad:
        rows = sorted((r for (b, s, _), r in self.rows.items() if b == bot_id and s == strategy and r.order),
                      key=lambda r: (r.info.is_champion, r.order), reverse=True)
        if version is not None:
            first = self.rows.get((bot_id, strategy, version))
            rows = ([first] if first else []) + [r for r in rows if r.info.version < version]
        out = ChampionLoad()
        for row in rows:
            try:
                out.model = load_verified(self.key, bot_id, strategy, row.info.version, row.data, row.sha256,
                                          row.hmac)
            except ArtifactRefused as exc:
                log.error("model refused: %s", exc)
                out.refused.append(str(exc))
                continue
            out.version = row.info.version
            return out
        return out

    async def list(self, bot_id: str, strategy: str | None = None) -> list[ModelInfo]:
        return [r.info for (b, s, _), r in sorted(self.rows.items()) if b == bot_id and strategy in (None, s)]

    async def record_refusal(self, bot_id: str, strategy: str, version: int, report: dict[str, Any]) -> None:
        self.refusals.append({"bot_id": bot_id, "strategy": strategy, "version": version, "report": report})
