"""What the engine hands to storage: batches written in one transaction, and what it gets back on start.

A batch carries the new signals, the latest state of every phantom touched since the last batch and
the checkpoint; storing them atomically is what lets a killed replay resume exactly where its last
batch ended (the candles after the checkpoint are simply processed again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from core.engine import CandleResult, Checkpoint, Decision
from core.phantom import Phantom


class StoreUnavailable(Exception):
    """The store could not write (its database is down); the batch is kept and saved later."""


@dataclass
class Batch:
    decisions: list[Decision] = field(default_factory=list)
    phantoms: dict[str, Phantom] = field(default_factory=dict)  # id -> latest state
    checkpoint: Checkpoint | None = None
    candles: int = 0

    def add(self, result: CandleResult) -> None:
        self.candles += 1
        for d in result.decisions:
            self.decisions.append(d)
            self.phantoms[d.phantom.id] = d.phantom
        for d in result.amended:  # stored again with its new action (once per batch: one row per statement)
            if all(x.signal.id != d.signal.id for x in self.decisions):
                self.decisions.append(d)
            self.phantoms[d.phantom.id] = d.phantom
        for p in result.closed:
            self.phantoms[p.id] = p
        for p in result.touched:
            self.phantoms[p.id] = p

    def merge(self, later: Batch) -> None:
        """Fold a later batch into this one (a save failed: keep everything, in order)."""
        self.decisions.extend(later.decisions)
        self.phantoms.update(later.phantoms)
        self.checkpoint = later.checkpoint or self.checkpoint
        self.candles += later.candles

    def __bool__(self) -> bool:
        return bool(self.candles or self.decisions or self.phantoms)


@dataclass
class Restored:
    checkpoint: Checkpoint | None
    active: list[Phantom]


class EngineStore(Protocol):
    async def save(self, bot_id: str, batch: Batch) -> None:
        """Signals, phantoms and the checkpoint in one transaction (idempotent: ids are deterministic)."""
        ...

    async def restore(self, bot_id: str) -> Restored: ...

    async def closed_phantoms(self, bot_id: str) -> list[Phantom]: ...


class MemoryStore:
    """The EngineStore of a replay without a database (benchmarks, tests)."""

    def __init__(self) -> None:
        self.signals: dict[str, Decision] = {}
        self.phantoms: dict[str, Phantom] = {}
        self.checkpoints: dict[str, Checkpoint] = {}

    async def save(self, bot_id: str, batch: Batch) -> None:
        for d in batch.decisions:
            self.signals.setdefault(d.signal.id, d)
        self.phantoms.update(batch.phantoms)
        if batch.checkpoint is not None:
            self.checkpoints[bot_id] = batch.checkpoint

    async def restore(self, bot_id: str) -> Restored:
        return Restored(self.checkpoints.get(bot_id),
                        [p for p in self.phantoms.values() if p.bot_id == bot_id and p.status == "active"])

    async def closed_phantoms(self, bot_id: str) -> list[Phantom]:
        return [p for p in self.phantoms.values() if p.bot_id == bot_id and p.status == "closed"]
