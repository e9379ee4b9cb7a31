"""APScheduler 3 with an in-memory store: jobs re-added at every start under fixed ids, each run
recorded in job_runs, errors logged and sent to Sentry (tagged with the job), and the admins told once
a job has failed three times in a row."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sentry_sdk
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.desk import JobStatus
from core.trader import Notice
from storage.db import session_factory
from storage.models import JobRun

log = logging.getLogger("phantomdesk.jobs")

FAILURES_BEFORE_ALERT = 3


@dataclass(frozen=True)
class JobSpec:
    id: str
    func: Callable[[], Awaitable[Any]]
    trigger: BaseTrigger
    misfire_grace_s: int = 60  # a busy loop may start a job late; later than this, the run is skipped
    bot_id: str | None = None
    desk_wide: bool = False  # once per desk (a backup, the daily report): only the leading replica runs it


class JobRecorder:
    def __init__(self, db: AsyncEngine, notify: Callable[[Notice], None],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 leads: Callable[[], bool] = lambda: True) -> None:
        """`leads()`: this process leads the desk's replicas (runs the desk-wide jobs)."""
        self.sessions = session_factory(db)
        self.notify = notify
        self.clock = clock
        self.leads = leads
        self.failures: Counter[str] = Counter()
        self.last: dict[str, dict[str, Any]] = {}
        self.running: set[asyncio.Task[Any]] = set()

    async def settle(self, within: float) -> None:
        """Wait for the runs in progress: APScheduler's shutdown would cancel them wherever they are."""
        if self.running:
            await asyncio.wait(self.running, timeout=within)

    def wrap(self, spec: JobSpec) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if spec.desk_wide and not self.leads():
                log.debug("job %s: run by the leading replica", spec.id)
                return
            if (task := asyncio.current_task()) is not None:  # APScheduler runs each async job as a task
                self.running.add(task)
                task.add_done_callback(self.running.discard)
            started = self.clock()
            run_id = await self._start(spec, started)
            try:
                await spec.func()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.exception("job %s failed", spec.id)
                with sentry_sdk.new_scope() as scope:
                    scope.set_tag("job_id", spec.id)
                    if spec.bot_id:
                        scope.set_tag("bot_id", spec.bot_id)
                    sentry_sdk.capture_exception(exc)
                await self._finish(run_id, "error", error[:2000] + "\n" + traceback.format_exc(limit=3)[-1500:])
                self.last[spec.id] = {"status": "error", "at": started, "error": error}
                self.failures[spec.id] += 1
                if self.failures[spec.id] == FAILURES_BEFORE_ALERT:  # once per streak, not every time after
                    self.notify(Notice("job_failing", spec.bot_id or "", f"job {spec.id} failed "
                                       f"{FAILURES_BEFORE_ALERT} times in a row: {error}", {"job_id": spec.id}))
                return
            await self._finish(run_id, "ok", None)
            self.last[spec.id] = {"status": "ok", "at": started, "error": None}
            self.failures[spec.id] = 0

        run.__name__ = f"job_{spec.id}"
        return run

    async def _start(self, spec: JobSpec, at: datetime) -> int | None:
        try:
            async with self.sessions.begin() as session:
                row = JobRun(job_id=spec.id, bot_id=spec.bot_id, started_at=at, status="running")
                session.add(row)
                await session.flush()
                return int(row.id)
        except Exception as exc:  # the database may be the thing that is down: the job still runs
            log.warning("job %s: run not recorded (%s)", spec.id, type(exc).__name__)
            return None

    async def _finish(self, run_id: int | None, status: str, error: str | None) -> None:
        if run_id is None:
            return
        try:
            async with self.sessions.begin() as session:
                await session.execute(update(JobRun).where(JobRun.id == run_id).values(
                    status=status, error=error, finished_at=self.clock()))
        except Exception as exc:
            log.warning("job run %s: result not recorded (%s)", run_id, type(exc).__name__)

    def on_missed(self, event: JobExecutionEvent) -> None:
        kind = "missed" if event.code == EVENT_JOB_MISSED else "skipped (still running)"
        log.warning("job %s %s", event.job_id, kind)
        self.last[event.job_id] = {"status": "missed", "at": self.clock(), "error": kind}


def install(scheduler: AsyncIOScheduler, specs: list[JobSpec], recorder: JobRecorder) -> None:
    for spec in specs:
        scheduler.add_job(recorder.wrap(spec), spec.trigger, id=spec.id, name=spec.id, replace_existing=True,
                          coalesce=True, max_instances=1, misfire_grace_time=spec.misfire_grace_s)
    scheduler.add_listener(recorder.on_missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)


def listing(scheduler: AsyncIOScheduler, recorder: JobRecorder) -> list[JobStatus]:
    """/jobs: every job's next run, last status and last error."""
    out = []
    for job in sorted(scheduler.get_jobs(), key=lambda j: j.id):
        last = recorder.last.get(job.id, {})
        out.append(JobStatus(job.id, last.get("status"), last.get("at"), job.next_run_time, last.get("error"),
                             recorder.failures[job.id]))
    return out
