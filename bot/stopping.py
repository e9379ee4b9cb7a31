"""SIGTERM/SIGINT around the event loop of `python -m bot serve`.

Imported before anything heavy (the desk's imports take seconds), so this module uses the standard
library only. Before the loop runs nothing has started that could be saved: a signal exits 0 at once.
Once the loop runs, bot.host turns a signal into a clean stop and arms `exit_within` as a last resort.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import NoReturn

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serving(args: list[str]) -> bool:
    """`python -m bot` and `python -m bot serve ...`: the long-running desk (other commands keep the defaults)."""
    return not args or args[0] == "serve"


def exit_at_once() -> None:
    for sig in SIGNALS:
        signal.signal(sig, _exit_now)


def _exit_now(signum: int, frame: FrameType | None) -> None:
    os._exit(0)  # nothing to save or flush yet; unwinding half-done imports could only go wrong


def exit_within(seconds: float, code: int) -> None:
    """Whatever still runs `seconds` from now (a hung call, a thread the interpreter would join at exit),
    the process exits with `code` then, before the platform's SIGKILL: a stop is always bounded."""

    def expire() -> None:
        time.sleep(seconds)
        sys.stderr.write(f"stop did not finish within {seconds:.1f}s: exiting now\n")
        sys.stderr.flush()
        os._exit(code)

    threading.Thread(target=expire, name="stop-deadline", daemon=True).start()


def exit_now(code: int) -> NoReturn:
    """After a completed stop: the output flushed, exit without the interpreter's teardown, which frees every
    module the desk imported (seconds: aiogram alone takes one) and joins threads nothing needs now."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
