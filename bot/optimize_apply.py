"""`python -m bot optimize apply STUDY --trial N --bot ID`: a finished trial's values written into a bot's
configuration. The new configuration is validated by BotConfig, shown as a diff, confirmed (or --yes), and
written in one transaction with its audit_log row (actor "console", action "optimize_apply", the study, the
trial, its in-sample value and the changes), like `bots edit`. A trial that does not exist, or that failed,
is refused with nothing written; so is a bot changed since the diff was shown.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.trial import TrialState
from pydantic import ValidationError

from bot.cli import EXIT_OK, CliError, database
from bot.cli_bots import ACTOR, describe_errors, plain_config
from bot.optimize import StudySpec, location, quiet_optuna, trial_candidate, trial_failure
from bot.settings import Settings, normalize_database_url
from core.config import BotConfig


def flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    """A configuration as dotted paths (strategies.scalp.reward_risk), so a diff names each value."""
    if not isinstance(doc, dict):
        return {prefix: doc}
    out: dict[str, Any] = {}
    for k, v in doc.items():
        out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def diff(old: BotConfig, new: BotConfig) -> dict[str, list[Any]]:
    before, after = flat(plain_config(old)), flat(plain_config(new))
    return {k: [before.get(k), after.get(k)] for k in sorted(before.keys() | after.keys())
            if before.get(k) != after.get(k)}


def apply(args: Any, settings: Settings) -> int:
    quiet_optuna()
    where = location(args.apply_storage or args.storage, settings.data_dir, args.study)  # before or after `apply`
    if where.journal is not None and not where.journal.exists():
        raise CliError(f"no study {args.study!r} in {where.journal} (give --storage where it is)")
    try:
        study = optuna.load_study(study_name=args.study, storage=where.open())
    except KeyError:
        raise CliError(f"no study {args.study!r} in {where.shown}") from None
    spec = StudySpec.model_validate(study.user_attrs["spec"])
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == args.trial), None)
    if trial is None:
        raise CliError(f"study {args.study!r} has no trial {args.trial} (it has {len(study.trials)}: "
                       f"0..{len(study.trials) - 1}); nothing was written")
    candidate = trial_candidate(trial)
    if trial.state != TrialState.COMPLETE or candidate is None:
        why = trial_failure(trial) or trial.state.name.lower()
        raise CliError(f"trial {args.trial} of {args.study!r} has no score ({why}): nothing to apply")
    url = normalize_database_url(args.db) if args.db else settings.database_url
    return asyncio.run(_apply(url, args, spec, where.shown, trial.value, candidate))


async def _apply(url: str, args: Any, spec: StudySpec, shown: str, value: float | None, candidate: Any) -> int:
    from storage.bots import upsert_bot
    from storage.db import session_factory
    from storage.models import Bot
    from storage.recovery import audit

    async with database(url, "optimize apply", null_pool=True) as engine:
        old = await _current(engine, args.bot)
        try:
            new = candidate.config(old, spec.strategy)
        except ValidationError as exc:
            raise CliError(f"bot {args.bot!r} with trial {args.trial}'s values does not validate: "
                           f"{'; '.join(describe_errors(exc))} (nothing was written)") from None
        changes = diff(old, new)
        if not changes:
            print(f"bot {args.bot!r} already has trial {args.trial}'s values: nothing to change")
            return EXIT_OK
        print(f"bot {args.bot!r} ← study {args.study!r} trial {args.trial} "
              f"({spec.objective} {value:+.4g} in-sample):")
        for path, (before, after) in changes.items():
            print(f"  {path}: {before} -> {after}")
        for note in _notes(old, spec):
            print(f"note: {note}")
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError("add --yes to apply without a terminal to confirm on (nothing was written)")
            answer = await asyncio.to_thread(input, "apply? [y/N] ")  # nothing else runs meanwhile: a thread is fine
            if answer.strip().lower() not in ("y", "yes"):
                print("not applied")
                return EXIT_OK
        now = datetime.now(UTC)
        async with session_factory(engine).begin() as session:
            row = await session.get(Bot, args.bot)
            if row is None or _config(row) != old:
                raise CliError(f"bot {args.bot!r} changed since the diff above: run the command again "
                               "(nothing was written)")
            await upsert_bot(session, new, now)
            audit(session, ACTOR, "optimize_apply", args.bot, {
                "study": args.study, "storage": shown, "trial": args.trial, "objective": spec.objective,
                "value": value, "strategy": spec.strategy, "strategy_version": spec.strategy_version,
                "changes": changes}, now)
    print(f"applied trial {args.trial} of {args.study!r} to bot {args.bot!r} ({len(changes)} change(s), audited)")
    return EXIT_OK


def _config(row: Any) -> BotConfig | None:
    from storage.bots import config_of

    try:
        return config_of(row)
    except ValidationError:
        return None


async def _current(engine: Any, bot_id: str) -> BotConfig:
    from storage.db import session_factory
    from storage.models import Bot

    async with session_factory(engine)() as session:
        row = await session.get(Bot, bot_id)
    if row is None:
        raise CliError(f"no bot {bot_id!r} (see `python -m bot bots list`)")
    config = _config(row)
    if config is None:
        raise CliError(f"bot {bot_id!r}: its stored configuration no longer validates; fix it with `bots edit` first")
    return config


def _notes(bot: BotConfig, spec: StudySpec) -> list[str]:
    out = []
    if sorted(bot.symbols) != sorted(spec.symbols) or bot.intervals != tuple(spec.intervals):
        out.append(f"the study ran on {','.join(spec.symbols)} {'/'.join(spec.intervals)}; this bot trades "
                   f"{','.join(bot.symbols)} {bot.slow_interval}/{bot.fast_interval}")
    others = [n for n in bot.enabled_strategies() if n != spec.strategy]
    if others:
        out.append(f"the study ran {spec.strategy} alone; this bot also runs {', '.join(others)}")
    return out
