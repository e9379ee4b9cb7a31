"""SIGTERM at 20 seeded random moments of `python -m bot` on SQLite: during its start-up (imports included),
while it trades seven months of real candles replayed at full speed (candle, signal, phantom and checkpoint
writes), while a /retrain (from Telegram, through the fake Bot API) trains in its worker process beside the
synthetic market, and while the start-up replays a journal of 4000 records.

Every exit is code 0 within 10 s and leaves no process behind. A desk that had started trading wrote its
final snapshot: the checkpoint in bot_states counts every candle the bot processed (the count the desk logs
when its bots stop; /health's count read just before the signal is a lower bound) and was written after the
signal. A skipped final save leaves the checkpoint of the last periodic save, which misses the candles
processed since. A journal flush cut short leaves each record either in the database or in the journal.

PD_SIGTERM_SEED picks other moments; a failure names the seed and the run's moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from bot.settings import normalize_database_url
from core.ledger import LedgerEvent, TradeRecord
from storage.journal import decode, encode
from tests.conftest import CANDLES
from tests.fakes.clock import wait_until
from tests.fakes.telegram import TOKEN, FakeBotAPI
from tests.hostproc import DeskProcess, desk_env, run

SEED = int(os.environ.get("PD_SIGTERM_SEED", "20"))
ADMIN = 111
JOURNAL_RECORDS = 4000
EXIT_WITHIN_S = 10.0
PARALLEL = 2  # two desks at a time: most of a run is its imports, on one core each
STOPPED = re.compile(r"bot main: stopped after (\d+) candles \(unsaved: (\d+)\)")
RETRAIN_DONE = re.compile(r"v\d+ (promoted|refused):")


@dataclass
class Case:
    n: int
    kind: str  # startup | listening | trading | retrain | journal
    moment: float  # startup: a fraction of the start-up the cued runs took; the others: seconds after their cue
    took: float | None = None
    wall: float = 0.0  # the whole run, start-up included
    left_in_journal: int | None = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"#{self.n} {self.kind} at {self.moment:.3f}"


def _plan(rng: random.Random) -> tuple[list[Case], list[Case]]:
    """16 runs with a cue in the desk's own output, then 4 at a fraction of the start-up those measured."""
    kinds = ["trading"] * 7 + ["retrain"] * 4 + ["journal"] * 3 + ["listening"] * 2
    rng.shuffle(kinds)
    spans = {"trading": (0.05, 1.5), "retrain": (0.1, 1.5), "journal": (0.05, 1.0), "listening": (0.0, 0.05)}
    cued = [Case(i, kind, rng.uniform(*spans[kind])) for i, kind in enumerate(kinds)]
    timed = [Case(len(cued) + i, "startup", rng.uniform(0.02, 1.0)) for i in range(4)]
    return cued, timed


class LogTail:
    """The desk's log, read as it grows (megabytes at full speed: not re-read whole at every poll)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = ""
        self._offset = 0

    def has(self, needle: str) -> bool:
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
            self._offset += len(chunk)
            self.text += chunk.decode(errors="replace")
        return needle in self.text


def _journal_file(var: Path) -> Path:
    url = normalize_database_url(f"sqlite:///{(Path('var') / 'phantomdesk.db').as_posix()}")  # the default URL
    return var / "journal" / f"ledger-main-{hashlib.sha256(url.encode()).hexdigest()[:8]}.jsonl"


def _write_journal(path: Path) -> None:
    """Trades a run during a database outage left behind: replayed into the database at the next start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with path.open("w") as f:
        for i in range(JOURNAL_RECORDS):
            trade = TradeRecord(f"journal-{i:05d}", "main", None, "BTCUSDT", "trend_pullback", "long", "open",
                                "paper", Decimal("0.01"), Decimal(1), Decimal(50000), start + timedelta(minutes=i),
                                Decimal(49000), Decimal(52000))
            f.write(encode(LedgerEvent("open", trade).as_json()))


def _checkpoint(db: Path) -> tuple[int, datetime] | None:
    with sqlite3.connect(db) as con:
        row = con.execute("SELECT counters, taken_at FROM bot_states WHERE bot_id = 'main' AND kind = 'checkpoint'"
                          ).fetchone()
    if row is None:
        return None
    counters = json.loads(row[0])["counters"]
    taken = datetime.fromisoformat(str(row[1]))
    return counters.get("candles", 0) + counters.get("duplicates", 0), taken.replace(tzinfo=taken.tzinfo or UTC)


def _group_gone(pgid: int) -> bool:
    """No live process left in the desk's process group (its retrain worker included; zombies are dead)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


class Runs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = desk_env(FEED_SPEED="0", SECRET_KEY="k" * 40)  # the synthetic market at full speed
        self.template = root / "template"
        self.template.mkdir()
        assert run(["migrate"], self.template, self.env).returncode == 0
        _write_journal(_journal_file(root / "journal-template"))
        self.started_s: list[float] = []  # spawn to "started:" of the trading runs: the start-up others cut

    async def run(self, case: Case) -> None:
        cwd = self.root / f"{case.n:02d}-{case.kind}"
        shutil.copytree(self.template / "var", cwd / "var")
        if case.kind == "journal":
            journal = _journal_file(cwd / "var")
            shutil.copytree(self.root / "journal-template" / "journal", journal.parent)
        api = FakeBotAPI().start() if case.kind in ("retrain", "listening") else None
        env = dict(self.env)
        if case.kind == "trading":
            env.update(MARKET_FEED="replay", FEED_DATA=str(CANDLES / "binance_spot_2020-12_2021-07"),
                       DEFAULT_SYMBOLS="BTCUSDT,ETHUSDT")
        if api is not None:
            env.update(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_SERVER=api.url, TELEGRAM_ADMIN_IDS=str(ADMIN))
        desk = DeskProcess(cwd, env)
        log = LogTail(desk.log_path)
        try:
            spawned = time.monotonic()
            desk.start()
            assert desk.proc is not None
            processed_before = 0
            if case.kind == "startup":
                await asyncio.sleep(case.moment * statistics.median(self.started_s))  # the moment itself
            else:
                await self._cue(case, desk, log, api)
                if case.kind == "trading" and log.has("phantomdesk: notice start"):  # like "startup": no Telegram
                    self.started_s.append(time.monotonic() - spawned)  # seen within ~10 ms of its writing
                await asyncio.sleep(case.moment)  # the random moment after the cue
                if case.kind in ("trading", "retrain"):
                    processed_before = _processed_now(desk)
            assert desk.proc.poll() is None, f"{case}: the desk ended before its signal:\n{log.text[-3000:]}"
            signalled = datetime.now(UTC)
            code, case.took = desk.terminate(15)
            await wait_until(lambda: _group_gone(desk.proc.pid), f"{case}: every process of the desk to end", 3)
        finally:
            if desk.proc is not None and not _group_gone(desk.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(desk.proc.pid, signal.SIGKILL)
            if api is not None:
                api.stop()
        log.has("")
        case.wall = time.monotonic() - spawned
        case.notes.append("before the event loop" if "stopping" not in log.text else
                          "in the async start-up" if "stopped during start-up" in log.text else "while running")
        assert code == 0, f"{case}: exit code {code}\n{log.text[-3000:]}"
        assert case.took < EXIT_WITHIN_S, f"{case}: took {case.took:.1f}s\n{log.text[-3000:]}"
        assert "Traceback" not in log.text, f"{case}:\n{log.text[-5000:]}"
        self._check_snapshot(case, cwd / "var" / "phantomdesk.db", log.text, signalled, processed_before)
        if case.kind == "retrain":
            assert RETRAIN_DONE.search(log.text) or "retrain abandoned" in log.text, case
            case.notes.append("abandoned" if "retrain abandoned" in log.text else "finished first")
        if case.kind == "journal":
            self._check_journal(case, cwd / "var")

    async def _cue(self, case: Case, desk: DeskProcess, log: LogTail, api: FakeBotAPI | None) -> None:
        if case.kind == "listening":  # the health server is up; the runtime starts now
            await wait_until(lambda: log.has("listening on"), f"{case}: the health server", 120)
        elif case.kind == "journal":
            await wait_until(lambda: log.has(f"replaying {JOURNAL_RECORDS} journal records"),
                             f"{case}: the journal flush", 120)
        else:
            await wait_until(lambda: log.has("phantomdesk: notice start"), f"{case}: the start", 120)
            await wait_until(lambda: _processed_now(desk) > 0, f"{case}: the first candles", 30)
            if case.kind == "retrain":
                assert api is not None
                await _start_retrain(api, log, case)

    @staticmethod
    def _check_snapshot(case: Case, db: Path, text: str, signalled: datetime, processed_before: int) -> None:
        stopped = STOPPED.search(text)
        if case.kind in ("trading", "retrain"):
            assert stopped is not None, f"{case}: the bot was trading, yet no stop was logged:\n{text[-3000:]}"
        if stopped is None:  # stopped before the bot ran: nothing to save
            return
        processed, unsaved = int(stopped[1]), int(stopped[2])
        assert processed >= processed_before, (case, stopped[0], processed_before)
        checkpoint = _checkpoint(db)
        assert checkpoint is not None, f"{case}: no checkpoint after {processed} candles"
        counted, taken = checkpoint
        assert counted == processed, f"{case}: the checkpoint counts {counted} candles, the bot processed {processed}"
        assert taken >= signalled, f"{case}: the last checkpoint ({taken}) predates the signal ({signalled})"
        assert unsaved == 0, (case, stopped[0])
        case.notes.append(f"{processed} candles saved")

    @staticmethod
    def _check_journal(case: Case, var: Path) -> None:
        """Stopped between two records: each is in the database or still in the journal, none in both."""
        with sqlite3.connect(var / "phantomdesk.db") as con:
            ids = {r[0] for r in con.execute("SELECT id FROM trades WHERE id LIKE 'journal-%'")}
        journal = _journal_file(var)
        lines = journal.read_text().splitlines() if journal.exists() else []
        left = {decode(line)["trade"]["id"] for line in lines}
        assert not ids & left and len(ids) + len(left) == JOURNAL_RECORDS, (case, len(ids), len(left))
        case.left_in_journal = len(left)
        case.notes.append(f"{len(ids)} records replayed, {len(left)} left in the journal")


def _processed_now(desk: DeskProcess) -> int:
    try:
        body = desk.health()[1]
    except (OSError, ValueError):
        return 0
    return sum(b.get("candles") or 0 for b in body.get("bots", []) if b.get("running_here"))


async def _start_retrain(api: FakeBotAPI, log: LogTail, case: Case) -> None:
    """/retrain from the admin until a strategy has the outcomes to train on."""
    def answers() -> int:
        return len([s for s in api.to(ADMIN) if "retrain:" in s.text or "nothing to retrain" in s.text])

    deadline = time.monotonic() + 60
    while not log.has("retrain started"):
        assert time.monotonic() < deadline, f"{case}: no retrain started:\n{log.text[-3000:]}"
        before = answers()
        api.send_text(ADMIN, "/retrain")  # "nothing to retrain" until a strategy has its outcomes
        await wait_until(lambda: log.has("retrain started") or answers() > before,  # noqa: B023
                         f"{case}: an answer to /retrain", 30)


def test_sigterm_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    cued, timed = _plan(rng)
    runs = Runs(tmp_path)
    # each run in its own thread and event loop: one run's blocking call never delays another's signal
    with ThreadPoolExecutor(PARALLEL) as pool:
        for batch in (cued, timed):
            for case, error in zip(batch, pool.map(lambda c: _failure(runs, c), batch), strict=True):
                assert error is None, f"seed {SEED}, {case}: {error}"
    cases = cued + timed
    report = "\n".join(f"{c}: exit in {c.took:.2f}s (run {c.wall:.1f}s) {'; '.join(c.notes)}" for c in cases)
    print(f"seed {SEED}, max exit {max(c.took or 0 for c in cases):.2f}s\n{report}")
    assert any("abandoned" in c.notes for c in cases if c.kind == "retrain"), "no retrain was abandoned:\n" + report
    assert any(c.left_in_journal for c in cases), "no journal flush was cut short:\n" + report


def _failure(runs: Runs, case: Case) -> BaseException | None:
    try:
        asyncio.run(runs.run(case))
    except BaseException as exc:  # reported by the caller with the seed
        return exc
    return None


def test_sigterm_while_telegram_polling_prepares(tmp_path: Path) -> None:
    """The signal lands while polling still prepares (deleteWebhook, slow here): the stop does not wait for
    the polling that would start afterwards."""
    with FakeBotAPI() as api:
        api.delays["deleteWebhook"] = 6.0  # longer than the stop takes, shorter than the fake's own cleanup
        env = desk_env(SECRET_KEY="k" * 40, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_SERVER=api.url,
                       TELEGRAM_ADMIN_IDS=str(ADMIN))
        assert run(["migrate"], tmp_path, env).returncode == 0
        desk = DeskProcess(tmp_path, env).start()
        try:
            api.wait_for(lambda: "deleteWebhook" in api.requests, 120, "polling to prepare")
            code, took = desk.terminate(15)
        finally:
            desk.kill()
    assert code == 0 and took < 5.0, (code, took, desk.output[-3000:])  # not waiting for deleteWebhook's 6 s
    assert "getUpdates" not in api.requests
