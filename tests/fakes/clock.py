"""What the tests of the exchange clients share: the injected "now", waiting on a condition, and the check
that no pybit thread outlives its client."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any


class Clock:
    """The injected "now", shared by the client under test and the fake exchange."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def wait_until(predicate: Callable[[], Any], what: str, within: float = 5.0, every: float = 0.01) -> None:
    """Until `predicate()` (a value, or an awaitable of one: a database read) is truthy, polled every `every`
    seconds (longer for a costly one, e.g. an HTTP call to a process)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def threads_stopped(before: set[threading.Thread], what: str) -> None:
    """Every thread started since `before` ends within 5 s. asyncio's executor threads belong to the test
    loop and go with it; sentry's worker is not ours (a test that set sentry up earlier in the session
    leaves its logging integration installed, and pybit's error logs during a reconnect wake it)."""

    def leftovers() -> list[threading.Thread]:
        return [t for t in threading.enumerate()
                if t not in before and not t.name.startswith(("asyncio_", "sentry-sdk."))]

    try:
        await wait_until(lambda: not leftovers(), what)
    except AssertionError:
        raise AssertionError(f"threads left running: {[t.name for t in leftovers()]}") from None
