"""`python -m bot optimize`: an Optuna study of one strategy's parameters (and, when named, risk and filter
settings), walk-forward by construction; its arguments are in bot/cli_optimize.py, its results in
bot/optimize_results.py, `optimize apply` in bot/optimize_apply.py.

A trial samples the space (core/optimize/space.py) with a seeded TPE sampler, replays the in-sample windows
one by one through the replay's engine in memory (core/optimize/evaluate.py), reports the objective after
each so the median pruner can stop a hopeless trial, and scores the pooled in-sample figures: below
--min-trades it fails (pruned, with why). The out-of-sample windows are never replayed by a trial; the
best trials' out-of-sample figures are computed once the study stops, beside them (never to choose).

Storage, shared by every process working on a study (each one an Optuna worker; no other coordination):
- default: a journal file per study under DATA_DIR/optimize (Optuna's JournalStorage, its appends serialised
  by a kernel file lock: KernelLock). Chosen over RDB on SQLite because several processes write a study at
  once and SQLite's single writer lock turns that into "database is locked" failures; the journal is made
  for it (an append-only log every process replays).
- `--storage postgresql://…`: Optuna's RDB storage in the schema `optuna` of that database (the desk's
  PostgreSQL: its own tables stay untouched), which any number of `optimize` processes on other machines
  join by study name.
A trial left running by a process that died (SIGKILL, a lost machine) is failed, not lost count of: by the
next run when no other process holds the study's `.workers` lock (journal), or whose pid is gone on this
machine, and by Optuna's heartbeat on PostgreSQL. Ctrl-C fails the running trial and keeps the others.
The same command again continues its study (the default study name derives from the strategy, its
version, the data, the windows and the objective): finished trials are kept; `--trials N` is the study's
size, so a run stops once the study holds N finished trials (several processes may overshoot it by one
trial each, at most).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import signal
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, ValidationError

from bot.cli import EXIT_FAILURE, EXIT_INTERRUPTED, CliError
from bot.settings import Settings, normalize_database_url
from core.config import BotConfig
from core.market.candle import INTERVAL_MS, dt_to_ms
from core.market.replay import WARMUP_CANDLES
from core.optimize.evaluate import Market, WindowReplayer
from core.optimize.objectives import Figures, Objective, figures, verdict
from core.optimize.space import Candidate, Space, SpaceError, space_of
from core.optimize.windows import Scheme, WalkForward, WindowError, walk_forward
from core.report import replayed
from core.strategies import STRATEGIES
from core.strategies.params import first_error
from storage.candle_files import BadCandleFile, read_candle_dir
from storage.funding_files import read_funding_dir

log = logging.getLogger("phantomdesk.optimize")

BOT_ID = "optimize"  # the bot id trials run under (part of their signal ids, like `replay`'s "replay")
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SCHEMA = "optuna"  # Optuna's tables in the desk's PostgreSQL live apart from the desk's
SCHEMA_LOCK = 0x0F7A_5E4C  # pg advisory lock: two processes creating Optuna's tables at once would collide
HEARTBEAT_S, GRACE_S = 30, 120  # RDB: a trial without a heartbeat for GRACE_S is failed (its process died)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # a trial that ran to its verdict (a failed one too)
POLL_S = 0.5


class StudySpec(BaseModel):
    """What a study measures; trials of another spec are not comparable, so a study keeps one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str
    strategy_version: str
    symbols: list[str]
    intervals: tuple[str, str]
    start: str  # ISO UTC: the period's first candle open
    end: str  # ... and its last candle close
    data: str  # sha256 of the candles (with their warm-up) and funding rates the study can read
    scheme: Scheme
    windows: int
    oos_fraction: float
    objective: Objective
    min_trades: int
    search: list[str]  # bot settings searched besides the strategy's parameters
    ml: bool

    def default_name(self) -> str:
        return f"{self.strategy}-{hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:10]}"

    def differs(self, other: StudySpec) -> str | None:
        mine, theirs = self.model_dump(), other.model_dump()
        return next((f"{k}: {theirs[k]} here, {mine[k]} in the study" for k in mine if mine[k] != theirs[k]), None)


# --- the data -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataArgs:
    """Which candles a study reads (picklable: each worker process loads them once)."""

    data: Path
    funding: Path | None
    symbols: tuple[str, ...] | None
    slow: str
    fast: str
    start_ms: int | None
    end_ms: int | None

    def load(self) -> Market:
        series = read_candle_dir(self.data, self.symbols, [self.slow, self.fast])
        if not series:
            raise CliError(f"--data: no {self.slow}/{self.fast} candle files for the requested symbols in {self.data}")
        symbols = sorted({s.symbol for s in series})
        return Market(tuple(series), read_funding_dir(self.funding or self.data, symbols), self.slow, self.fast)


def data_digest(market: Market, start_ms: int, end_ms: int) -> str:
    """The candles a study can read (each window's warm-up included) and the funding rates in that time."""
    h = hashlib.sha256()
    first = end_ms
    for s in market.series:
        before = s.window(None, start_ms)
        used = s.take(slice(max(0, len(before) - WARMUP_CANDLES), len(s.window(None, end_ms))))
        if len(used):
            first = min(first, int(used.open_ms[0]))
        h.update(f"{s.symbol}|{s.interval}|".encode())
        for column in (used.open_ms, used.open, used.high, used.low, used.close, used.volume):
            h.update(np.ascontiguousarray(column).tobytes())
    for symbol in market.symbols:
        h.update(repr(market.funding.between(symbol, first - 1, end_ms)).encode())
    return h.hexdigest()


# --- where the study lives -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Location:
    """A study's storage: a journal file, or a PostgreSQL URL for Optuna's RDB storage (psycopg driver)."""

    journal: Path | None = None
    url: str | None = None

    @property
    def shown(self) -> str:
        """Where, without credentials (for output and the audit log)."""
        if self.journal is not None:
            return str(self.journal)
        parts = urlsplit(self.url or "")
        return f"postgresql://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path} (schema {SCHEMA})"

    def open(self) -> BaseStorage:
        if self.journal is not None:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            path = str(self.journal)
            return JournalStorage(JournalFileBackend(path, lock_obj=KernelLock(path)))
        assert self.url is not None
        return _postgres_storage(self.url)


class KernelLock(JournalFileOpenLock):
    """The journal's append lock as a kernel lock (flock) on `<journal>.lock`: a waiting worker sleeps in the
    kernel until the lock is free, where Optuna's file locks poll with a backoff of up to a second (two workers
    appending ~20 synced records per trial each spent more time waiting than working), and the system drops it
    when its process dies, so a SIGKILL leaves no stale lock behind. For processes of one machine."""

    def __init__(self, path: str) -> None:
        super().__init__(path, grace_period=None)
        self.path = f"{path}.lock"
        self.fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock


def location(storage: str | None, data_dir: Path, study: str) -> Location:
    """--storage: a PostgreSQL URL (any of the desk's spellings), else a journal file path; default
    DATA_DIR/optimize/<study>.journal."""
    if storage is None:
        return Location(journal=data_dir / "optimize" / f"{study}.journal")
    scheme = urlsplit(storage).scheme.lower()
    if scheme.startswith("sqlite"):
        raise CliError("--storage: SQLite lets one process write at a time, and a study's workers write at once: "
                       "give a journal file path (the default) or a postgresql:// URL")
    if not scheme.startswith("postgres"):
        return Location(journal=Path(storage))
    try:
        parts = urlsplit(normalize_database_url(storage))
    except ValueError as exc:
        raise CliError(f"--storage: {exc}") from None
    query = [("sslmode" if k == "ssl" else k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return Location(url=urlunsplit(("postgresql+psycopg", parts.netloc, parts.path, urlencode(query), "")))


def _postgres_storage(url: str) -> RDBStorage:
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    setup = sa.create_engine(url, poolclass=NullPool)
    try:
        with setup.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": SCHEMA_LOCK})
            try:
                conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
                conn.commit()
                return RDBStorage(url, engine_kwargs={"connect_args": {"options": f"-c search_path={SCHEMA}"},
                                                      "pool_pre_ping": True},
                                  heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEMA_LOCK})
                conn.commit()
    except sa.exc.SQLAlchemyError as exc:
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CliError(f"--storage: {type(exc).__name__}: {first[:300]}") from None
    finally:
        setup.dispose()


def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own progress and table say what happened
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("core.market.replay").setLevel(logging.WARNING)  # the data's gaps, once per window and trial


_PRESENCE: list[int] = []  # file descriptors held for the life of the process


def present(where: Location, probe: bool) -> bool:
    """Mark this process as working on the study: a shared lock on `<journal>.workers`, held until it exits (the
    system drops it however the process ends, SIGKILL included). With `probe`, first try to take it exclusively:
    True when that works, i.e. no other process works on the study now (a PostgreSQL study: never known)."""
    if where.journal is None:
        return False
    import fcntl

    where.journal.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{where.journal}.workers", os.O_RDWR | os.O_CREAT, 0o644)
    alone = False
    if probe:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            pass
    fcntl.flock(fd, fcntl.LOCK_SH)
    _PRESENCE.append(fd)
    return alone


def fail_orphans(study: optuna.Study, alone: bool) -> int:
    """Trials left running by processes that are gone (killed), failed so that the study's count is true: every
    running trial when no other process works on the study (`alone`); else those of a dead process of this
    machine, and those that never got their worker written (their process died as it created them) after
    GRACE_S. Trials of live processes on other machines are Optuna's heartbeat's (RDB)."""
    host, now, n = socket.gethostname(), datetime.now(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        where, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        dead = where == host and pid.isdigit() and not _alive(int(pid))
        unclaimed = not where and t.datetime_start is not None and (now - t.datetime_start).total_seconds() > GRACE_S
        if alone or dead or unclaimed:
            study.tell(t.number, state=TrialState.FAIL)
            n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- one trial -----------------------------------------------------------------------------------------------
@dataclass
class TrialObjective:
    """What each trial runs: sample, replay the in-sample windows, report after each, score."""

    spec: StudySpec
    space: Space
    walk: WalkForward
    base: BotConfig
    replayer: WindowReplayer
    run_id: str
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def __call__(self, trial: optuna.Trial) -> float:
        # first: a trial whose process dies is failed by whoever finds that process gone (fail_orphans)
        trial.set_user_attr("worker", self.worker)
        candidate = self.space.suggest(trial)
        outcome = Outcome(self.run_id, candidate.as_json())
        try:
            config = candidate.config(self.base, self.spec.strategy)
        except ValidationError as exc:
            _failed(trial, outcome, f"invalid combination: {first_error(exc)}")
        windows = self.walk.in_sample
        runs = []
        for step, window in enumerate(windows):
            runs.append(self.replayer.run(config, window))
            outcome.candles += runs[-1].candles
            value = figures([r.closed for r in runs], config.capital).value(self.spec.objective)
            if value is None:
                continue
            trial.report(value, step)
            if step < len(windows) - 1 and trial.should_prune():
                _failed(trial, outcome, f"pruned after {window.label}: below the median of the trials before it")
        result = figures([r.closed for r in runs], config.capital)
        outcome.in_sample = result.as_json()
        score = verdict(result, self.spec.objective, self.spec.min_trades)
        if score.value is None:
            _failed(trial, outcome, score.why or "failed")
        trial.set_user_attr(OUTCOME, outcome.as_json())
        return score.value


OUTCOME = "outcome"  # one user attribute per trial, written once: every write is a synced append (journal)


@dataclass
class Outcome:
    """What a trial did, kept with it in the study."""

    run: str  # the command invocation that ran it
    values: dict[str, dict[str, Any]]  # its Candidate, as sampled (rounded to the grid, Decimals as text)
    in_sample: dict[str, Any] | None = None  # Figures, once every in-sample window ran
    failed: str | None = None
    candles: int = 0  # replayed (warm-ups aside)

    def as_json(self) -> dict[str, Any]:
        return {"run": self.run, "values": self.values, "in_sample": self.in_sample, "failed": self.failed,
                "candles": self.candles}

    @classmethod
    def of(cls, t: FrozenTrial) -> Outcome | None:
        doc = t.user_attrs.get(OUTCOME)
        return cls(**doc) if isinstance(doc, dict) else None


def _failed(trial: optuna.Trial, outcome: Outcome, why: str) -> NoReturn:
    """A trial without a score: pruned (TPE still learns it is a bad region), with why."""
    outcome.failed = why
    trial.set_user_attr(OUTCOME, outcome.as_json())
    raise optuna.TrialPruned(why)


def trial_candidate(t: FrozenTrial) -> Candidate | None:
    outcome = Outcome.of(t)
    return None if outcome is None else Candidate.from_json(outcome.values)


def trial_figures(t: FrozenTrial) -> Figures | None:
    outcome = Outcome.of(t)
    return None if outcome is None or outcome.in_sample is None else Figures.from_json(outcome.in_sample)


def trial_failure(t: FrozenTrial) -> str | None:
    if t.state == TrialState.FAIL:
        return "interrupted (its process stopped)"
    outcome = Outcome.of(t)
    return None if outcome is None else outcome.failed


# --- workers -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """What one worker process needs (picklable: spawned workers rebuild everything from it)."""

    data: DataArgs
    spec: StudySpec
    study: str
    where: Location
    target: int  # the study's size: stop once it holds this many finished trials
    seed: int
    index: int  # this worker among the run's
    run_id: str
    parent: int | None = None  # a spawned worker: its command's pid (a worker whose command died stops)


def sampler_seed(seed: int, worker: int, trials_before: int) -> int:
    """Each worker of each run its own stream: two seeded workers would otherwise sample the same first
    parameters, and a continued study would repeat its first random trials."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{worker}:{trials_before}".encode()).digest()[:4], "big")


def study_of(job: Job, storage: BaseStorage) -> optuna.Study:
    before = len(optuna.load_study(study_name=job.study, storage=storage).trials)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed(job.seed, job.index, before), constant_liar=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    return optuna.load_study(study_name=job.study, storage=storage, sampler=sampler, pruner=pruner)


def remaining(study: optuna.Study, target: int) -> int:
    """Trials still to finish. Running ones are not subtracted: one its process died with would hold the study
    short forever; several processes may overshoot the target by one trial each instead."""
    return target - len(study.get_trials(deepcopy=False, states=FINISHED))


def work(job: Job, market: Market, after_trial: Callable[[optuna.Study], None] | None = None) -> None:
    """Run trials until the study holds job.target finished trials."""
    spec = job.spec
    base = BotConfig(id=BOT_ID, symbols=market.symbols, slow_interval=market.slow, fast_interval=market.fast,
                     strategies={spec.strategy: {}})
    walk = walk_forward(dt_to_ms(datetime.fromisoformat(spec.start)), dt_to_ms(datetime.fromisoformat(spec.end)),
                        spec.windows, spec.oos_fraction, spec.scheme, INTERVAL_MS[market.slow])
    strategy = STRATEGIES.get(spec.strategy)
    if strategy is None or strategy.version != spec.strategy_version:
        raise CliError(f"strategy {spec.strategy} is not the version the study was started with")
    objective = TrialObjective(spec, space_of(strategy.params, spec.search, ml=spec.ml), walk, base,
                               WindowReplayer(market, ml=spec.ml), job.run_id)
    study = study_of(job, job.where.open())

    def enough(study: optuna.Study, _: FrozenTrial) -> None:
        if after_trial is not None:
            after_trial(study)
        if (job.parent is not None and os.getppid() != job.parent) or remaining(study, job.target) <= 0:
            study.stop()  # the study is full, or our command is gone (killed)

    if remaining(study, job.target) > 0:
        study.optimize(objective, callbacks=[enough], gc_after_trial=False)


def worker_main(job: Job) -> None:
    """A spawned worker: a fresh process that loads the user strategies and the candles once, then works."""
    from bot.logs import setup_logging
    from bot.settings import settings_or_exit
    from bot.strategies import load_strategies

    signal.signal(signal.SIGINT, _interrupted_once)
    present(job.where, probe=False)
    settings = settings_or_exit()
    setup_logging(settings.log_level, settings.log_format)
    load_strategies(settings)
    quiet_optuna()
    try:
        work(job, job.data.load())
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except CliError as exc:
        print(f"error: worker {job.index}: {exc}", file=sys.stderr)
        sys.exit(exc.code)


def _interrupted_once(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C reaches the command and its workers at once, and an impatient second one must not cut the
    first's bookkeeping short (the trial being marked failed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


# --- progress ------------------------------------------------------------------------------------------------
class Progress:
    """Trials done of the target, the best value so far and the ETA, on stderr; a no-op unless `show`."""

    def __init__(self, show: bool, target: int, done: int) -> None:
        self.show, self.target, self.done = show, target, done
        self.bar: Any = None
        self.task: Any = None

    @contextmanager
    def running(self) -> Iterator[Progress]:
        if not self.show:
            yield self
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        with Bar(TextColumn("optimize"), BarColumn(), MofNCompleteColumn(),
                 TextColumn("trials, best [bold]{task.fields[best]}"), TimeElapsedColumn(), TextColumn("ETA"),
                 TimeRemainingColumn(), console=Console(stderr=True), transient=True, refresh_per_second=4) as bar:
            self.bar = bar
            self.task = bar.add_task("optimize", total=self.target, completed=self.done, best="-")
            yield self

    def update(self, study: optuna.Study) -> None:
        if self.bar is None:
            return
        trials = study.get_trials(deepcopy=False, states=FINISHED)
        values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        self.bar.update(self.task, completed=min(len(trials), self.target),
                        best=f"{max(values):.4g}" if values else "-")


# --- the command ---------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    spec: StudySpec
    study: str
    where: Location
    market: Market
    walk: WalkForward
    space: Space
    data: DataArgs


def prepare(args: Any, settings: Settings) -> Prepared:
    """Everything checked before any trial: the strategy, the data, the windows, the space, the study's spec."""
    strategy = STRATEGIES.get(args.strategy)
    if strategy is None:
        raise CliError(f"--strategy: unknown strategy {args.strategy!r} (known: {', '.join(STRATEGIES.names())}; "
                       "a file of your own goes in STRATEGIES_DIR)")
    slow, fast = args.intervals  # checked by the parser (bot/cli.py interval_pair)
    try:
        space = space_of(strategy.params, args.search, ml=args.ml)
    except (ValueError, SpaceError) as exc:
        raise CliError(str(exc)) from None
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip()) if args.symbols else None
    data = DataArgs(args.data, args.funding, symbols, slow, fast, dt_to_ms(args.start) if args.start else None,
                    dt_to_ms(args.end) if args.end else None)
    try:
        market = data.load()
    except (BadCandleFile, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    window = replayed(list(market.series), data.start_ms, data.end_ms, slow)
    if window is None:
        raise CliError("no candles between --from and --to")
    period = window[0]
    start_ms, end_ms = dt_to_ms(period.start), dt_to_ms(period.end)
    try:
        walk = walk_forward(start_ms, end_ms, args.windows, args.oos_fraction, args.scheme, INTERVAL_MS[slow])
    except WindowError as exc:
        raise CliError(str(exc)) from None
    spec = StudySpec(strategy=strategy.name, strategy_version=strategy.version, symbols=market.symbols,
                     intervals=(slow, fast), start=period.start.isoformat(), end=period.end.isoformat(),
                     data=data_digest(market, start_ms, end_ms), scheme=args.scheme, windows=args.windows,
                     oos_fraction=args.oos_fraction, objective=args.objective, min_trades=args.min_trades,
                     search=list(args.search), ml=args.ml)
    study = args.study or spec.default_name()
    if not STUDY_NAME.match(study):
        raise CliError(f"--study: {study!r}: 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return Prepared(spec, study, location(args.storage, settings.data_dir, study), market, walk, space, data)


def open_study(p: Prepared) -> optuna.Study:
    """The study, created on first use; refused when it measures something else than this command."""
    study = optuna.create_study(study_name=p.study, storage=p.where.open(), direction="maximize",
                                load_if_exists=True)
    stored = study.user_attrs.get("spec")
    if stored is None:
        study.set_user_attr("spec", p.spec.model_dump(mode="json"))
        study.set_user_attr("created", datetime.now(UTC).isoformat())
    else:
        theirs = StudySpec.model_validate(stored)
        if (why := theirs.differs(p.spec)) is not None:
            raise CliError(f"study {p.study!r} in {p.where.shown} measures something else ({why}): use another "
                           "--study, or leave --study out for this command's own")
    return study


def run_study(args: Any, settings: Settings) -> int:
    from bot.optimize_results import report

    quiet_optuna()
    p = prepare(args, settings)
    study = open_study(p)
    if orphans := fail_orphans(study, present(p.where, probe=True)):
        log.info("study %s: %d trial(s) of a process that died marked failed", p.study, orphans)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    run_id = uuid.uuid4().hex[:12]
    jobs = [Job(p.data, p.spec, p.study, p.where, args.trials, args.seed, i, run_id, os.getpid() if i else None)
            for i in range(args.workers)]
    progress = Progress(not args.json and sys.stderr.isatty(), args.trials, done)
    started = time.perf_counter()
    interrupted = False
    try:
        with progress.running():
            signal.signal(signal.SIGINT, _interrupted_once)
            with helpers(jobs[1:], study, progress):
                work(jobs[0], p.market, progress.update)  # this process is worker 0: its candles are loaded
    except KeyboardInterrupt:
        interrupted = True
    elapsed = time.perf_counter() - started
    if interrupted:
        kept = len(study.get_trials(deepcopy=False, states=FINISHED))
        print(f"interrupted: study {p.study!r} keeps its {kept} finished trial(s) in {p.where.shown}; the same "
              "command continues it", file=sys.stderr)
        return EXIT_INTERRUPTED
    return report(args, p, study, run_id, elapsed)


@contextmanager
def helpers(jobs: list[Job], study: optuna.Study, progress: Progress) -> Iterator[None]:
    """Workers 1..W-1 as spawned processes beside this one (worker 0): started on entry, waited for on exit (the
    progress bar reading the storage meanwhile); on Ctrl-C each is interrupted once and waited for."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no state forked mid-flight
    procs = [context.Process(target=worker_main, args=(job,), name=f"optimize-worker-{job.index}") for job in jobs]
    for proc in procs:
        proc.start()
    try:
        yield
        while any(proc.is_alive() for proc in procs):
            progress.update(study)
            for proc in procs:
                proc.join(POLL_S / len(procs))
    except BaseException:
        for proc in procs:  # they may have had the terminal's Ctrl-C already: once is all they act on
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGINT)
        for proc in procs:
            proc.join(60)
        raise
    failed = [(job.index, proc.exitcode) for job, proc in zip(jobs, procs, strict=True) if proc.exitcode]
    if failed:
        codes = ", ".join(f"worker {i}: exit {code}" for i, code in failed)
        raise CliError(f"{codes}; the finished trials are kept (see the errors above)", EXIT_FAILURE)


def command(args: Any, settings_fn: Callable[[], Settings]) -> int:
    from bot.cli import run_command

    settings = settings_fn()
    if args.optimize_command == "apply":
        from bot.optimize_apply import apply

        return run_command(lambda: apply(args, settings))
    return run_command(lambda: run_study(args, settings))
