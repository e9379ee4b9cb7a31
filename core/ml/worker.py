"""The process that trains beside a replay, on the second core (core/ml/filter.py says why the results do
not depend on it).

A fresh interpreter ("spawn": nothing inherited from a process with a database connection and an event
loop) that imports scikit-learn while the replay starts, and dies with its parent (Linux: a parent killed
with SIGKILL leaves no worker behind). Leaving the context kills it: a training whose verdict lies after
the last candle is not waited for.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1


def _start() -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    import core.ml.train  # noqa: F401 - scikit-learn loads here, before the first training needs it


@contextmanager
def training_pool() -> Iterator[ProcessPoolExecutor]:
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_start)
    pool.submit(int)  # start the worker now: it warms up while the replay reads its candles
    try:
        yield pool
    finally:
        workers = list(pool._processes.values())  # no public way to stop a running task before 3.14
        pool.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            process.kill()
