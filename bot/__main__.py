"""`python -m bot [command]`: the one entry point (ARCHITECTURE.md section 3b)."""

from __future__ import annotations

import sys

from bot import stopping

if __name__ == "__main__" and stopping.serving(sys.argv[1:]):
    stopping.exit_at_once()  # first: the imports below take seconds, and a SIGTERM meanwhile must exit 0

import argparse
import asyncio
import logging

from bot import __version__
from bot.cli import OneLineParser
from bot.logs import setup_logging
from bot.redaction import redactor
from bot.settings import Settings, settings_or_exit

log = logging.getLogger("phantomdesk")


def _settings() -> Settings:
    settings = settings_or_exit()
    redactor.update(settings.secret_values())
    setup_logging(settings.log_level, settings.log_format)
    return settings


def _desk_settings() -> Settings:
    """For a command that builds engines or validates bots: the user strategies are registered first
    (a refused one is a log line, never the end of the command)."""
    settings = _settings()
    from bot.strategies import load_strategies

    load_strategies(settings)
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _desk_settings()  # a bad setting stops here, in a moment, before the host's seconds of imports
    from bot.host import serve

    settings.signing_key()  # embedded mode: create the key now, not in the middle of a retrain
    code = asyncio.run(serve(settings, check_only=args.check))
    import sentry_sdk

    sentry_sdk.flush(timeout=1.0)  # what its exit hook would have sent
    stopping.exit_now(code)


def cmd_migrate(args: argparse.Namespace) -> int:
    from storage.migrations import upgrade

    settings = _settings()
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)  # here, each step is the news
    upgrade(settings.database_url, args.revision)
    log.info("database migrated to %s", args.revision)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m bot", description="phantomdesk: a managed crypto trading desk")
    parser.add_argument("--version", action="version", version=f"phantomdesk {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the desk (the default)")
    serve.add_argument("--check", action="store_true", help="start, answer /health once, stop (smoke test)")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(func=cmd_migrate)

    from bot import cli_candles

    cli_candles.register(sub, _settings)

    from bot import cli_replay

    cli_replay.register(sub, _desk_settings)

    from bot import cli_optimize

    cli_optimize.register(sub, _desk_settings)

    from bot import cli_ml

    cli_ml.register(sub, _desk_settings)

    from bot import console

    console.register(sub, _desk_settings)

    from bot import cli_bots

    cli_bots.register(sub, _desk_settings)

    from bot import cli_strategies

    cli_strategies.register(sub, _desk_settings)

    from bot import cli_backup

    cli_backup.register(sub, _settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        args = build_parser().parse_args(["serve", *(argv or [])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
