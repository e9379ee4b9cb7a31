"""The model registry on SQLite and PostgreSQL with Redis: signed round trip, refusal of tampered,
foreign-key and unsigned artifacts (nothing parsed before verification), fallback to the previous
champion, restart with Redis empty, operator approvals; and a replay with the ML filter that crashes
after a promotion and resumes to exactly the same result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis
from sqlalchemy import select, update

from core.config import BotConfig
from core.engine import Engine
from core.market.candle import Candle, dt_to_ms
from core.market.replay import ReplayFeed
from core.ml import artifact
from core.ml.artifact import dumps
from core.ml.dataset import N_FEATURES, Dataset
from core.ml.evidence import EvidenceRule
from core.ml.filter import FilterSettings, MLScorer
from core.ml.model import Model
from core.ml.registry import MemoryRegistry, ModelArtifact
from core.ml.store import ScorerStore
from core.ml.train import train
from core.persistence import MemoryStore
from core.phantom import phantom_digest
from core.runner import run
from storage import migrations
from storage.bots import upsert_bot
from storage.candle_files import read_candle_dir
from storage.db import create_engine, session_factory
from storage.engine_store import SqlEngineStore
from storage.ml_registry import SqlModelRegistry, champion_key, learning_phantoms
from storage.models import AuditLog, MLModel, RecoveryItem
from tests.conftest import CANDLES

KEY = b"s" * 40
BOT = BotConfig(id="mlbot", symbols=["BTCUSDT", "ETHUSDT"])
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _model(seed: int) -> Model:
    rng = np.random.default_rng(seed)
    n = 200
    X = rng.normal(size=(n, N_FEATURES))
    y = (rng.random(n) < 1 / (1 + np.exp(-X[:, 0]))).astype(np.int8)
    t = np.arange(n, dtype=np.int64) * 3_600_000
    return train(Dataset("scalp", tuple(f"{i}" for i in range(n)), X, y, np.where(y == 1, 2.0, -1.0),
                         np.full(n, 2.0), np.ones(n, np.int8), t, t + 1_800_000))


@pytest.fixture(scope="module")
def models() -> list[Model]:
    return [_model(1), _model(2)]


async def _open(url: str) -> Any:
    await asyncio.to_thread(migrations.upgrade, url)
    db = create_engine(url, null_pool=True)
    async with session_factory(db).begin() as session:
        await upsert_bot(session, BOT)
    return db


async def _store_two(reg: SqlModelRegistry, models: list[Model]) -> None:
    for version, model in zip((30, 80), models, strict=True):
        assert await reg.save(ModelArtifact("mlbot", "scalp", version, T0 + timedelta(days=version), 200,
                                            {"why": "test", "challenger": {"brier": 0.2}}, dumps(model)))
        assert await reg.set_champion("mlbot", "scalp", version, reason="passed the gate")


def _spy_parser(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every artifact that reaches the parser (core/ml/artifact.parse, the only one)."""
    parsed: list[bytes] = []
    parse = artifact.parse
    monkeypatch.setattr(artifact, "parse", lambda data: parsed.append(data) or parse(data))
    return parsed


async def test_round_trip_champion_pointer_and_audit(db_url: str, redis_url: str, models: list[Model]) -> None:
    db = await _open(db_url)
    redis = Redis.from_url(redis_url)
    try:
        reg = SqlModelRegistry(db, KEY, redis)
        await _store_two(reg, models)
        # idempotent: a resumed replay saving the same version again changes nothing
        assert not await reg.save(ModelArtifact("mlbot", "scalp", 80, T0, 1, {}, b"other bytes"))
        assert not await reg.set_champion("mlbot", "scalp", 80)
        load = await reg.load_champion("mlbot", "scalp")
        assert load.version == 80 and load.refused == []
        X = np.random.default_rng(0).normal(size=(20, N_FEATURES))
        assert np.array_equal(load.model.predict(X), models[1].predict(X))  # type: ignore[union-attr]
        async with session_factory(db)() as s:
            rows = (await s.execute(select(MLModel.id, MLModel.version, MLModel.is_champion, MLModel.sha256,
                                           MLModel.hmac).order_by(MLModel.version))).all()
            audit = (await s.scalars(select(AuditLog).where(AuditLog.action == "ml_promote")
                                     .order_by(AuditLog.id))).all()
        assert [(r.version, r.is_champion) for r in rows] == [(30, False), (80, True)]
        assert all(len(r.sha256) == 64 and len(r.hmac) == 64 for r in rows)
        assert int(await redis.get(champion_key("mlbot", "scalp"))) == rows[1].id  # only the id in Redis
        assert [(a.actor, a.details["version"], a.details["previous"]) for a in audit] == [
            ("system", 30, None), ("system", 80, 30)]
        infos = await reg.list("mlbot")
        assert [(i.version, i.is_champion, i.size > 1000) for i in infos] == [(30, False, True), (80, True, True)]
    finally:
        await redis.aclose()
        await db.dispose()


@pytest.mark.parametrize("damage", ["flipped byte", "another key", "unsigned"])
async def test_refused_artifacts_fall_back_and_are_never_parsed(db_url: str, redis_url: str, damage: str,
                                                               models: list[Model],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    db = await _open(db_url)
    redis = Redis.from_url(redis_url)
    try:
        await _store_two(SqlModelRegistry(db, KEY, redis), models)
        async with session_factory(db).begin() as s:
            good = await s.scalar(select(MLModel.artifact).where(MLModel.version == 30))
            bad = bytearray(await s.scalar(select(MLModel.artifact).where(MLModel.version == 80)))
            if damage == "flipped byte":
                bad[len(bad) // 3] ^= 0x10
                await s.execute(update(MLModel).where(MLModel.version == 80).values(artifact=bytes(bad)))
            elif damage == "unsigned":
                await s.execute(update(MLModel).where(MLModel.version == 80).values(hmac=""))
        key = b"another key, 32 bytes or longer!!" if damage == "another key" else KEY
        parsed = _spy_parser(monkeypatch)
        load = await SqlModelRegistry(db, key, redis).load_champion("mlbot", "scalp")
        if damage == "another key":  # every artifact fails: no model, signals go unscored
            assert load.model is None and load.version is None and len(load.refused) == 2
            assert parsed == []
        else:  # the previous champion is used
            assert load.version == 30 and load.model is not None and len(load.refused) == 1
            assert parsed and all(p == good for p in parsed)  # only the verified artifact reached the parser
        assert ("sha256" if damage == "flipped byte" else "unsigned" if damage == "unsigned" else "signature") \
            in load.refused[0]
    finally:
        await redis.aclose()
        await db.dispose()


async def test_restart_with_redis_empty_restores_the_champion(db_url: str, redis_url: str,
                                                              models: list[Model]) -> None:
    db = await _open(db_url)
    redis = Redis.from_url(redis_url)
    try:
        await _store_two(SqlModelRegistry(db, KEY, redis), models)
        await redis.flushdb()  # Redis lost everything; a new process starts
        fresh = SqlModelRegistry(db, KEY, redis)
        load = await fresh.load_champion("mlbot", "scalp")
        assert load.version == 80
        assert await fresh.champion_pointer("mlbot", "scalp") is not None  # rewritten from the database
        await redis.set(champion_key("mlbot", "scalp"), "999999")  # a stale or forged pointer
        assert (await fresh.load_champion("mlbot", "scalp")).version == 80  # the database decides
        no_redis = SqlModelRegistry(db, KEY, None)
        assert (await no_redis.load_champion("mlbot", "scalp")).version == 80
    finally:
        await redis.aclose()
        await db.dispose()


async def test_refused_challenger_asks_the_operator_once(db_url: str, redis_url: str,
                                                         models: list[Model]) -> None:
    db = await _open(db_url)
    redis = Redis.from_url(redis_url)
    try:
        reg = SqlModelRegistry(db, KEY, redis)
        await reg.save(ModelArtifact("mlbot", "scalp", 30, T0, 200, {}, dumps(models[0])))
        await reg.set_champion("mlbot", "scalp", 30)
        report = {"why": "Brier 0.2500 worse than the champion's 0.2400",
                  "challenger": {"brier": 0.25, "lift_r": 0.01, "n": 40}, "champion": {"version": 30, "brier": 0.24}}
        for version in (80, 130):
            await reg.save(ModelArtifact("mlbot", "scalp", version, T0, 200, report, dumps(models[1])))
            await reg.record_refusal("mlbot", "scalp", version, report)
        await reg.record_refusal("mlbot", "scalp", 130, report)  # repeated after a resume: no second item
        pending = await reg.pending_approvals("mlbot")
        assert [p["details"]["version"] for p in pending] == [130]  # 80 was superseded
        assert pending[0]["options"] == ["promote", "dismiss"] and "Brier" in pending[0]["details"]["why"]
        assert not await reg.promote_anyway("mlbot", "scalp", 80, "tg:42")  # superseded: nothing happens
        assert await reg.promote_anyway("mlbot", "scalp", 130, "tg:42")
        assert not await reg.promote_anyway("mlbot", "scalp", 130, "tg:42")  # pressed twice
        assert (await reg.load_champion("mlbot", "scalp")).version == 130
        async with session_factory(db)() as s:
            items = (await s.scalars(select(RecoveryItem).order_by(RecoveryItem.id))).all()
            audit = (await s.scalars(select(AuditLog).where(AuditLog.action == "ml_promote_anyway"))).all()
        assert [(i.status, i.decision, i.decided_by) for i in items] == [
            ("expired", "superseded", None), ("approved", "promote", 42)]
        assert len(audit) == 1 and audit[0].actor == "tg:42" and audit[0].details["version"] == 130
        # a scorer in force adopts the operator's choice
        scorer = MLScorer("mlbot")
        assert await scorer.reload_champion(reg, "scalp") == 130
        await reg.save(ModelArtifact("mlbot", "scalp", 180, T0, 200, report, dumps(models[0])))
        await reg.record_refusal("mlbot", "scalp", 180, report)
        assert await reg.dismiss("mlbot", "scalp", 180, "tg:7")
        assert not await reg.promote_anyway("mlbot", "scalp", 180, "tg:7")
        assert (await reg.load_champion("mlbot", "scalp")).version == 130
    finally:
        await redis.aclose()
        await db.dispose()


# --- a replay with the filter: crash after a promotion, resume, same result -------------------------
# every trained model takes effect (gate "always": 40 days hold too few outcomes for evidence; the mechanics of a
# champion in force across a crash are what is tested here), some scored signals refused
SETTINGS = FilterSettings(min_samples=20, retrain_every=20, retrain_growth=0.0, threshold=0.12,
                          rule=EvidenceRule(always=True))


@pytest.fixture(scope="module")
def candles() -> list[Candle]:
    start = dt_to_ms(datetime(2021, 2, 1, tzinfo=UTC))
    series = read_candle_dir(CANDLES / "binance_spot_2020-12_2021-07", ["BTCUSDT", "ETHUSDT"], ["15", "5"])
    return list(ReplayFeed([s.window(start, start + 40 * 86_400_000) for s in series]).candles())


async def _stream(candles: list[Candle]) -> AsyncIterator[Candle]:
    for c in candles:
        yield c


async def test_replay_with_the_filter_resumes_to_the_same_result(db_url: str, redis_url: str,
                                                                 candles: list[Candle]) -> None:
    # the reference: one uninterrupted run in memory; where does the first promotion happen?
    scorer = MLScorer("mlbot", SETTINGS)
    memory = MemoryStore()
    seen: list[int] = []  # candles processed; then the index of the first promotion

    def watch(_result: object) -> None:
        seen.append(len(seen))
        if not promoted_at and any(t.promoted for t in scorer.pending):
            promoted_at.append(len(seen))

    promoted_at: list[int] = []
    reference = MemoryRegistry(KEY)
    await run(Engine(BOT, scorer=scorer), _stream(candles), ScorerStore(memory, scorer, reference), flush_every=2_000,
              on_result=watch)
    closed = await memory.closed_phantoms("mlbot")
    want = (phantom_digest(closed), scorer.state(), sorted((p.id, p.action, p.ml_score) for p in closed))
    scored = [p for p in closed if p.ml_score is not None]
    assert promoted_at and scored and any(p.action == "REJECTED" for p in scored), "no model ever in force"

    db = await _open(db_url)
    redis = Redis.from_url(redis_url)
    try:
        store = SqlEngineStore(db, redis)
        registry = SqlModelRegistry(db, KEY, redis)
        cut = promoted_at[0] + 3_000  # the crash comes after a champion was promoted and checkpointed
        first = MLScorer("mlbot", SETTINGS)
        await run(Engine(BOT, scorer=first), _stream(candles[:cut]),
                  ScorerStore(store, first, registry, outcomes=lambda b: learning_phantoms(db, b)), flush_every=2_000)
        await redis.flushdb()  # and Redis is gone too
        second = MLScorer("mlbot", SETTINGS)
        report = await run(Engine(BOT, scorer=second), _stream(candles),
                           ScorerStore(store, second, SqlModelRegistry(db, KEY, redis),
                                       outcomes=lambda b: learning_phantoms(db, b)), flush_every=2_000)
        assert report.resumed_from is not None
        got = await learning_phantoms(db, "mlbot")
        assert (phantom_digest(got), second.state(), sorted((p.id, p.action, p.ml_score) for p in got)) == want
        versions = {(i.strategy, i.version) for i in await registry.list("mlbot")}
        assert versions == {(i.strategy, i.version) for i in await reference.list("mlbot")}  # no more, no fewer
    finally:
        await redis.aclose()
        await db.dispose()
