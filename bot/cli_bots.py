"""`python -m bot bots add|edit|show|list|remove|pause|resume`: bot configurations as data.

    python -m bot bots add bots.example.yaml      # one bot, a list of bots, or {bots: [...]}; YAML or JSON
    python -m bot bots edit bots.yaml             # the bots must exist; their status (paused/halted) is kept
    python -m bot bots show main > main.yaml      # a bot's configuration as a file `edit` accepts
    python -m bot bots list [--json]
    python -m bot bots pause main "funding week"  /  python -m bot bots resume main
    python -m bot bots remove main [--yes]        # --yes needed while it has open trades or a live desk

Every bot of a file is validated (core.config.BotConfig) before anything is written; each problem is one
line naming the file, the bot and the field path, and the command exits 1 with nothing written. The writes
of one command are one transaction, with an audit_log row per bot (actor "console"). Like every command
that touches the database, it refuses to run unless the schema is at head (exit 3).

A desk process already running a bot reads its status at start; `/pause` in Telegram acts at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, SettingsFn, database, run_command
from storage.instances import trader_of

if TYPE_CHECKING:
    import yaml
    from pydantic import ValidationError
    from sqlalchemy.ext.asyncio import AsyncEngine

    from core.config import BotConfig
    from storage.models import Bot

log = logging.getLogger("phantomdesk")

ACTOR = "console"
FILE_TYPES = (".yaml", ".yml", ".json")
FRIENDLIER = {"missing": "required field is missing", "extra_forbidden": "unknown field (not a bot setting)"}


class BadBotFile(Exception):
    """One or more problems in a bot file; each line names the file, the bot and the field."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def register(subparsers: Any, settings: SettingsFn) -> None:
    """Add `bots ...` to the `python -m bot` parser."""
    bots = subparsers.add_parser("bots", help="bot configurations: add/edit from YAML or JSON, list, pause, remove")
    sub = bots.add_subparsers(dest="bots_command", required=True,
                              metavar="{add,edit,show,list,remove,pause,resume}")

    add = sub.add_parser("add", help="add the bots of a YAML/JSON file (refused if an id exists)",
                         description="The file holds one bot, a list of bots, or `bots: [...]`; see "
                                     "bots.example.yaml. Every bot is checked first: one bad bot and nothing "
                                     "is written.")
    add.add_argument("file", type=Path, help="a .yaml, .yml or .json file")
    add.set_defaults(func=_command(settings, _add))

    edit = sub.add_parser("edit", help="replace the configuration of existing bots from a YAML/JSON file",
                          description="The bots must exist. Fields left out of the file take their defaults; "
                                      "the status (running/paused/halted) is kept.")
    edit.add_argument("file", type=Path, help="a .yaml, .yml or .json file")
    edit.set_defaults(func=_command(settings, _edit))

    show = sub.add_parser("show", help="print a bot's configuration as YAML (or JSON), ready for `bots edit`")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_command(settings, _show))

    ls = sub.add_parser("list", help="id, name, mode, status, symbols, strategies and risk of every bot")
    ls.add_argument("--json", action="store_true", help="one JSON array instead of the table")
    ls.set_defaults(func=_command(settings, _list))

    rm = sub.add_parser("remove", help="delete a bot and every row that belongs to it",
                        description="Signals, phantoms, trades, orders, snapshots, models and recovery items "
                                    "of the bot are deleted with it (ON DELETE CASCADE); the audit log, job "
                                    "history and the shared candles are kept.")
    rm.add_argument("id")
    rm.add_argument("--yes", action="store_true",
                    help="remove even with open trades or a desk process running it")
    rm.set_defaults(func=_command(settings, _remove))

    pause = sub.add_parser("pause", help="stop a bot opening positions (stored: survives restarts)")
    pause.add_argument("id")
    pause.add_argument("reason", nargs="*", help="why (free text)")
    pause.set_defaults(func=_command(settings, _pause))

    resume = sub.add_parser("resume", help="let a paused (or, with --yes, halted) bot trade again")
    resume.add_argument("id")
    resume.add_argument("--yes", action="store_true", help="resume a bot halted by its drawdown guard")
    resume.set_defaults(func=_command(settings, _resume))


def _command(settings: SettingsFn, body: Callable[[AsyncEngine, argparse.Namespace], Any]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        url = settings().database_url

        def call() -> int:
            try:
                if getattr(args, "file", None) is not None:  # a bad file fails before the database is opened
                    args.configs = read_bot_file(args.file)
                return asyncio.run(_with_engine(url, body, args))
            except BadBotFile as exc:
                for line in exc.lines:
                    print(f"error: {line}", file=sys.stderr)
                print(f"error: {args.file}: nothing was written", file=sys.stderr)
                return EXIT_FAILURE

        return run_command(call)

    return run


async def _with_engine(url: str, body: Callable[[AsyncEngine, argparse.Namespace], Any],
                       args: argparse.Namespace) -> int:
    async with database(url, f"bots {args.bots_command}", null_pool=True) as engine:
        result = await body(engine, args)
    return EXIT_OK if result is None else int(result)


# -- reading and validating a bot file -----------------------------------------------------------------------


def _yaml_loader() -> type[yaml.SafeLoader]:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """YAML keeps the last of two equal keys without a word; a config file must not."""

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeyLoader


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse(path: Path) -> Any:
    """The document of a YAML or JSON file; CliError with the line and column of a syntax error."""
    import yaml

    if path.suffix.lower() not in FILE_TYPES:
        raise CliError(f"{path}: unknown file type {path.suffix or '(none)'!r}: use .yaml, .yml or .json", EXIT_USAGE)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read it: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text, object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as exc:
            raise CliError(f"{path}:{exc.lineno}:{exc.colno}: JSON syntax error: {exc.msg} (nothing was written)"
                           ) from None
        except ValueError as exc:
            raise CliError(f"{path}: {exc} (nothing was written)") from None
    try:
        return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = exc.problem or exc.context or "invalid"
        raise CliError(f"{where}: YAML syntax error: {what} (nothing was written)") from None
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: YAML syntax error: {exc} (nothing was written)") from None


def _documents(path: Path, doc: Any) -> list[Any]:
    if doc is None:
        raise CliError(f"{path}: the file holds no bot")
    if isinstance(doc, dict) and set(doc) == {"bots"}:
        doc = doc["bots"]
    docs = doc if isinstance(doc, list) else [doc]
    if not docs:
        raise CliError(f"{path}: the file holds no bot")
    return docs


def _label(doc: Any, n: int) -> str:
    bot_id = doc.get("id") if isinstance(doc, dict) else None
    return f"bot {bot_id!r}" if isinstance(bot_id, str) and bot_id else f"bot #{n}"


def _field_path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unknown_field(loc: Sequence[Any]) -> str:
    """Which model refused the name — the bot's settings or one strategy's parameters — and the closest name
    it does know."""
    import difflib

    from core.config import BotConfig
    from core.strategies import STRATEGIES

    name = str(loc[-1]) if loc else ""
    spec = STRATEGIES.get(str(loc[1])) if len(loc) == 3 and loc[0] == "strategies" else None
    if spec is not None:
        known, what = list(spec.params.model_fields), f"not a parameter of strategy {spec.name}"
    else:
        known, what = list(BotConfig.model_fields), "not a bot setting"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"unknown field ({what}" + (f"; did you mean {close[0]!r}?)" if close else ")")


def describe_errors(exc: ValidationError) -> list[str]:
    """One `field.path: message` per pydantic error (a model-wide rule has no path of its own)."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = list(err.get("loc") or ())
        ctx = err.get("ctx") or {}
        if err.get("type") == "unknown_strategy" and "name" in ctx:
            loc.append(ctx["name"])
        message = FRIENDLIER.get(str(err.get("type")), str(err.get("msg", "invalid")))
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err.get("type") == "extra_forbidden":
            message = _unknown_field(loc)
        path = _field_path(loc)
        lines.append(f"{path}: {message}" if path else message)
    return lines


def validate_bots(path: Path, docs: list[Any]) -> list[BotConfig]:
    """Every bot of the file, validated; BadBotFile listing every problem of every bot otherwise."""
    from pydantic import ValidationError

    from core.config import BotConfig

    problems: list[str] = []
    configs: list[BotConfig] = []
    for n, doc in enumerate(docs, start=1):
        label = _label(doc, n)
        if not isinstance(doc, dict):
            problems.append(f"{path}: {label}: expected a mapping of fields, got {type(doc).__name__}")
            continue
        try:
            configs.append(BotConfig.model_validate(doc))
        except ValidationError as exc:
            problems.extend(f"{path}: {label}: {line}" for line in describe_errors(exc))
    seen: set[str] = set()
    for config in configs:
        if config.id in seen:
            problems.append(f"{path}: bot {config.id!r}: id: listed twice in the file")
        seen.add(config.id)
    if problems:
        raise BadBotFile(problems)
    return configs


def read_bot_file(path: Path) -> list[BotConfig]:
    return validate_bots(path, _documents(path, _parse(path)))


# -- add / edit ----------------------------------------------------------------------------------------------


def _num(value: Decimal | float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return text
    return f"{value:g}"


def _risk(risk_pct: Decimal | None, risk_usd: Decimal | None) -> str:
    # a fixed amount wins over the percentage (core.risk)
    return f"{_num(risk_usd)} USDT" if risk_usd is not None else f"{_num(risk_pct)}%"


def _symbols_text(symbols: list[str], universe: dict[str, Any] | None) -> str:
    """The list, or the rule in short: "top 20 by turnover, minus DOGEUSDT"."""
    if not universe:
        return ",".join(symbols)
    text = f"top {universe.get('top', 20)} by turnover"
    if universe.get("exclude"):
        text += " minus " + ",".join(universe["exclude"])
    if universe.get("include"):
        text += " plus " + ",".join(universe["include"])
    return text


def _summary(config: BotConfig) -> str:
    rule = config.universe.model_dump(mode="json") if config.universe is not None else None
    return (f"{config.mode}, {_symbols_text(config.symbols, rule)} on {config.slow_interval}/{config.fast_interval}, "
            f"strategies {','.join(config.enabled_strategies()) or '-'}, risk {_risk(config.risk_pct, config.risk_usd)}"
            f", ml threshold {config.ml_threshold:g}")


def _plain(value: Any) -> Any:
    """A configuration as plain YAML/JSON values (Decimal('1.0000000000') -> 1)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else format(value.normalize(), "f")
    return value


def plain_config(config: BotConfig) -> dict[str, Any]:
    """A configuration as `bots show` prints it (strategies this process could not load as stored)."""
    return _plain({**config.model_dump(mode="python"), "strategies": config.strategy_settings()})


def _changes(old: BotConfig | None, new: BotConfig) -> dict[str, list[Any]]:
    before = _plain(old.model_dump()) if old is not None else {}
    after = _plain(new.model_dump())
    return {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}


async def _add(db: AsyncEngine, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from storage.bots import upsert_bot
    from storage.db import session_factory
    from storage.models import Bot
    from storage.recovery import audit

    configs: list[BotConfig] = args.configs
    now = datetime.now(UTC)
    async with session_factory(db).begin() as session:
        taken = sorted(await session.scalars(select(Bot.id).where(Bot.id.in_([c.id for c in configs]))))
        if taken:
            which = f"bot {taken[0]!r} already exists" if len(taken) == 1 else \
                f"bots {', '.join(repr(t) for t in taken)} already exist"
            raise CliError(f"{args.file}: {which}: use `python -m bot bots edit` to change a bot (nothing was written)")
        for config in configs:
            await upsert_bot(session, config, now)
            audit(session, ACTOR, "bot_add", config.id, {"file": str(args.file),
                                                       "config": _plain(config.model_dump(mode="json"))}, now)
    for config in configs:
        print(f"added bot {config.id!r} ({config.name}): {_summary(config)}")
    return EXIT_OK


def _config_or_none(row: Bot) -> BotConfig | None:
    from storage.bots import config_of

    try:
        return config_of(row)
    except Exception:  # a row written under older rules: the edit replaces it anyway
        log.debug("bot %s: stored configuration does not validate", row.id, exc_info=True)
        return None


async def _edit(db: AsyncEngine, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from storage.bots import upsert_bot
    from storage.db import session_factory
    from storage.models import Bot
    from storage.recovery import audit

    configs: list[BotConfig] = args.configs
    now = datetime.now(UTC)
    report = []
    async with session_factory(db).begin() as session:
        rows = {r.id: r for r in await session.scalars(select(Bot).where(Bot.id.in_([c.id for c in configs])))}
        missing = [c.id for c in configs if c.id not in rows]
        if missing:
            raise CliError(f"{args.file}: no bot {', '.join(repr(m) for m in missing)}: use `python -m bot bots add` "
                           "to create it (nothing was written)")
        for config in configs:
            row = rows[config.id]
            changes = _changes(_config_or_none(row), config)
            status = row.status
            if changes:
                await upsert_bot(session, config, now)
                audit(session, ACTOR, "bot_edit", config.id, {"file": str(args.file), "changes": changes}, now)
            report.append((config.id, status, changes))
    for bot_id, status, changes in report:
        if not changes:
            print(f"bot {bot_id!r}: no changes")
            continue
        listed = "; ".join(f"{k}: {_short(v[0])} -> {_short(v[1])}" for k, v in changes.items())
        print(f"updated bot {bot_id!r} (status {status} kept): {listed}")
    return EXIT_OK


def _short(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- show / list ---------------------------------------------------------------------------------------------


async def _row(db: AsyncEngine, bot_id: str) -> Bot:
    from storage.db import session_factory
    from storage.models import Bot

    async with session_factory(db)() as session:
        row = await session.get(Bot, bot_id)
    if row is None:
        raise CliError(f"no bot {bot_id!r} (see `python -m bot bots list`)")
    return row


async def _show(db: AsyncEngine, args: argparse.Namespace) -> int:
    import yaml

    row = await _row(db, args.id)
    config = _config_or_none(row)
    if config is None:
        raise CliError(f"bot {args.id!r}: its stored configuration no longer validates; write a new file and "
                       "`bots edit` it")
    # a strategy this process could not load is shown as stored: an edit of this file must not drop it
    doc = plain_config(config)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"# bot {row.id!r}, status {_status(row)}")
        for name, unloaded in config.unloaded.items():
            print(f"# strategy {name}: {unloaded.why}")
        print(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None).rstrip())
    return EXIT_OK


def _strategies(row: Bot) -> list[str]:
    return [name for name, params in (row.strategies or {}).items()
            if not isinstance(params, dict) or params.get("enabled", True)]


def _listing(row: Bot) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "mode": row.mode, "status": row.status, "status_reason": row.status_reason,
        "status_since": row.status_since.isoformat() if row.status_since else None,
        "symbols": list(row.symbols or []), "universe": (row.config or {}).get("universe"),
        "intervals": list(row.intervals or []), "strategies": _strategies(row),
        "capital": _plain(row.capital), "risk_pct": _plain(row.risk_pct), "risk_usd": _plain(row.risk_usd),
        "max_leverage": _plain(row.max_leverage), "max_positions": row.max_positions,
        "ml_threshold": row.ml_threshold, "ml_min_p": row.ml_min_p,
        "last_heartbeat": row.last_heartbeat.isoformat() if row.last_heartbeat else None,
        "owner_instance": row.owner_instance,
        "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
    }


def _status(row: Bot) -> str:
    """running, or "halted since 2026-11-30 02:10 UTC (drawdown ...)": a stopped bot says since when and why."""
    since = f" since {row.status_since:%Y-%m-%d %H:%M} UTC" if row.status != "running" and row.status_since else ""
    return row.status + since + (f" ({row.status_reason})" if row.status_reason else "")


async def _list(db: AsyncEngine, args: argparse.Namespace) -> int:
    from storage.bots import list_bots
    from storage.db import session_factory

    async with session_factory(db)() as session:
        rows = await list_bots(session)
    if args.json:
        print(json.dumps([_listing(r) for r in rows], indent=2))
        return EXIT_OK
    if not rows:
        print("no bots (add some: python -m bot bots add bots.example.yaml)")
        return EXIT_OK
    header = ("ID", "NAME", "MODE", "STATUS", "SYMBOLS", "STRATEGIES", "RISK")
    table = [header] + [(
        r.id, r.name, r.mode, _status(r),
        _symbols_text(list(r.symbols or []), (r.config or {}).get("universe")), ",".join(_strategies(r)) or "-",
        _risk(r.risk_pct, r.risk_usd),
    ) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return EXIT_OK


# -- remove / pause / resume ---------------------------------------------------------------------------------


def _live_desk(row: Bot, now: datetime) -> str | None:
    """'instance X, heartbeat 12 s ago' when a desk process is trading the bot right now."""
    if row.last_heartbeat is None or trader_of(row.owner_instance or "?", row.last_heartbeat, now) is None:
        return None
    return f"instance {row.owner_instance or '?'}, heartbeat {(now - row.last_heartbeat).total_seconds():.0f} s ago"


def _cascading_tables() -> list[Any]:
    """Tables whose rows go with their bot (foreign key to bots.id, ON DELETE CASCADE)."""
    from storage.models import Base

    return [t for t in Base.metadata.sorted_tables
            if any(fk.column.table.name == "bots" and (fk.ondelete or "").upper() == "CASCADE"
                   for fk in t.foreign_keys)]


async def _remove(db: AsyncEngine, args: argparse.Namespace) -> int:
    from sqlalchemy import delete, func, select

    from storage.db import session_factory
    from storage.models import Bot, Trade
    from storage.recovery import audit

    now = datetime.now(UTC)
    async with session_factory(db).begin() as session:
        row = await session.get(Bot, args.id)
        if row is None:
            raise CliError(f"no bot {args.id!r} (see `python -m bot bots list`)")
        open_symbols = list(await session.scalars(
            select(Trade.symbol).where(Trade.bot_id == args.id, Trade.status == "open").order_by(Trade.symbol)))
        live = _live_desk(row, now)
        if not args.yes and (open_symbols or live):
            why = []
            if open_symbols:
                why.append(f"it has {len(open_symbols)} open trade(s) ({', '.join(open_symbols)}): removing it "
                           "forgets them, the positions stay on the exchange")
            if live:
                why.append(f"a desk is trading it ({live})")
            raise CliError(f"bot {args.id!r}: {'; '.join(why)}. Add --yes to remove it anyway (nothing was removed)")
        counts: dict[str, int] = {}
        for table in _cascading_tables():
            n = int(await session.scalar(select(func.count()).select_from(table).where(table.c.bot_id == args.id))
                    or 0)
            if n:
                counts[table.name] = n
        await session.execute(delete(Bot).where(Bot.id == args.id))
        for table in _cascading_tables():  # a SQLite connection without foreign_keys=ON would leave orphans
            left = int(await session.scalar(select(func.count()).select_from(table).where(table.c.bot_id == args.id))
                       or 0)
            if left:
                raise CliError(f"the database did not delete {left} {table.name} row(s) with the bot (foreign keys "
                               "not enforced?); nothing was removed")
        audit(session, ACTOR, "bot_remove", args.id, {"rows": counts, "open_trades": len(open_symbols),
                                                      "config_name": row.name}, now)
    rows = ", ".join(f"{n} {t}" for t, n in counts.items()) or "no other rows"
    print(f"removed bot {args.id!r} and its rows: {rows}")
    print("kept: audit_log and job_runs history, the shared candles")
    if open_symbols:
        print(f"note: {len(open_symbols)} open position(s) ({', '.join(open_symbols)}) are no longer tracked")
    return EXIT_OK


def _applies_when(row: Bot, now: datetime) -> None:
    live = _live_desk(row, now)
    if live:
        print(f"note: a desk is running this bot ({live}); it applies the status at its next heartbeat "
              "(within 30 s). /pause or /resume in Telegram act at once.")


async def _pause(db: AsyncEngine, args: argparse.Namespace) -> int:
    from storage.bots import set_status
    from storage.db import session_factory
    from storage.models import Bot
    from storage.recovery import audit

    reason = " ".join(args.reason).strip() or "paused from the console"
    now = datetime.now(UTC)
    async with session_factory(db).begin() as session:
        row = await session.get(Bot, args.id)
        if row is None:
            raise CliError(f"no bot {args.id!r} (see `python -m bot bots list`)")
        if row.status == "halted":  # pausing would turn the halt into a pause and lose its reason
            raise CliError(f"bot {args.id!r} is halted ({row.status_reason or 'no reason stored'}): it opens nothing "
                           "until resumed")
        was = row.status
        await set_status(session, args.id, "paused", reason, now)
        audit(session, ACTOR, "paused", args.id, {"reason": reason, "was": was}, now)
    print(f"paused bot {args.id!r}: {reason}" + (" (it was paused already; reason updated)" if was == "paused" else ""))
    _applies_when(row, now)
    return EXIT_OK


async def _resume(db: AsyncEngine, args: argparse.Namespace) -> int:
    from storage.bots import set_status
    from storage.db import session_factory
    from storage.models import Bot
    from storage.recovery import audit

    now = datetime.now(UTC)
    async with session_factory(db).begin() as session:
        row = await session.get(Bot, args.id)
        if row is None:
            raise CliError(f"no bot {args.id!r} (see `python -m bot bots list`)")
        if row.status == "running":
            print(f"bot {args.id!r} is running already")
            return EXIT_OK
        if row.status == "halted" and not args.yes:
            raise CliError(f"bot {args.id!r} is halted ({row.status_reason or 'no reason stored'}): resuming accepts "
                           "the loss that halted it; add --yes to resume")
        was, why = row.status, row.status_reason
        await set_status(session, args.id, "running", None, now)
        audit(session, ACTOR, "resume", args.id, {"was": was, "reason": why}, now)
    print(f"resumed bot {args.id!r} (was {was})")
    _applies_when(row, now)
    return EXIT_OK
