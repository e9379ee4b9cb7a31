"""ScorerStore: an EngineStore that carries the ML filter through batches and restarts.

The runner saves `engine.checkpoint()` right after taking it, with no candle in between, so the
scorer's state at save time is the state that matches the checkpoint. On save:
1. the models trained since the last batch go to the registry (idempotent writes), then
2. the scorer's state joins the checkpoint (extra["ml"]) and the batch is saved.
A crash between 1 and 2 leaves models the resumed run trains again, identically, and stores as no-ops.

On restore, the scorer is rebuilt from the checkpoint's state, the closed phantoms saved with it (with
their features) and the champion versions it names, loaded and verified by the registry: a replay
killed and resumed ends exactly like one never interrupted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from core.ml.filter import MLScorer
from core.ml.registry import ModelRegistry
from core.persistence import Batch, EngineStore, Restored
from core.phantom import Phantom

STATE_KEY = "ml"


class ScorerStore:
    def __init__(self, inner: EngineStore, scorer: MLScorer, registry: ModelRegistry, *,
                 outcomes: Callable[[str], Awaitable[list[Phantom]]] | None = None,
                 notify_refusals: bool = False) -> None:
        """`outcomes(bot_id)`: closed phantoms WITH features (the inner store's closed_phantoms when omitted).
        `notify_refusals`: ask the operator about refused challengers (live; a replay has nobody to ask)."""
        self.inner = inner
        self.scorer = scorer
        self.registry = registry
        self.outcomes = outcomes or inner.closed_phantoms
        self.notify_refusals = notify_refusals

    async def save(self, bot_id: str, batch: Batch) -> None:
        await self.scorer.flush(self.registry, notify_refusals=self.notify_refusals)
        if batch.checkpoint is not None:
            batch.checkpoint.extra[STATE_KEY] = self.scorer.state()
        await self.inner.save(bot_id, batch)

    async def restore(self, bot_id: str) -> Restored:
        restored = await self.inner.restore(bot_id)
        if restored.checkpoint is None:  # a first run: nothing to learn from yet
            self.scorer.reset()
            return restored
        # no ML state (a bot that ran without the filter): learn from its history, no model yet
        state = restored.checkpoint.extra.get(STATE_KEY)
        champions = {name: await self.registry.load_champion(bot_id, name, version=version)
                     for name, version in MLScorer.champions_in(state or {}).items()}
        self.scorer.resume(state, await self.outcomes(bot_id), champions)
        return restored

    async def closed_phantoms(self, bot_id: str) -> list[Phantom]:
        return await self.inner.closed_phantoms(bot_id)
