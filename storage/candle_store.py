"""CandleStore: candles in and out of the `candles` table on PostgreSQL and SQLite.

Two write paths, one result:
- `upsert` — the live path (one closed-candle batch per close): `INSERT ... ON CONFLICT DO UPDATE`
  (SQLAlchemy's postgresql/sqlite `insert`), sent as executemany of one statement compiled once. A
  multi-row VALUES statement would have to be chunked under asyncpg's 32,767 bind parameters and is
  recompiled by SQLAlchemy on every call (~0.16 ms per row); executemany binds 9 per row and asyncpg
  pipelines them, as fast with no compile cost (figures in bench/candles.py).
- `bulk_load` — backfills and file imports. PostgreSQL: Arrow writes the rows as CSV in C++ and
  asyncpg streams it with COPY; straight into `candles` when no stored row can collide (checked per
  series), else into a temp table merged with `INSERT ... SELECT ... ON CONFLICT DO UPDATE`.
  SQLite: one `executemany` of the upsert statement.
Both: rows whose values did not change are not rewritten (`WHERE ... IS DISTINCT FROM`), so re-importing
  a file costs reads, not WAL.

Exactness: candles carry floats and the columns are Numeric(28,10). Every float is written as its
shortest round-trip decimal text (`repr`, or Arrow's identical C++ formatter), so 70159.1 is stored as
70159.1, not as the binary expansion 70159.100000000005820766... that `Decimal(float)` or asyncpg's
float encoder would store, and reading it back as float8 gives the same float. (PostgreSQL's own
float8 -> numeric cast keeps only 15 significant digits, so floats are never cast inside the server.)
Values with more than 10 decimals are rounded to 10 by the column, as for any other writer.

Reads skip candles that are not sane (core/market/sanity.py) — e.g. a volume of 1e160 or a candle from the
future stored by an older version — counting them in `refused` with one log line per read: a stored absurd
candle must not stop a bot's warm-up after every restart.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Float, Integer, case, cast, delete, distinct, func, literal_column, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from core.desk import CandleStats, IntervalStats
from core.market.candle import INTERVAL_MS, Candle, ms_to_dt
from core.market.sanity import Refusal, sane_series
from core.market.series import FIELDS, CandleSeries, Gap
from storage.models import Candle as CandleRow
from storage.models import table_of

log = logging.getLogger(__name__)

TABLE = table_of(CandleRow)
KEY = ("symbol", "interval", "open_time")
VALUES = (*FIELDS, "turnover")
COLUMNS = (*KEY, *VALUES)

# asyncpg refuses statements with more than 32,767 bind parameters; SQLite >= 3.32 allows 32,766.
# A multi-row VALUES statement must stay under both (bench/candles.py's baseline uses this).
MAX_BIND_PARAMS = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
ROWS_PER_STATEMENT = MAX_BIND_PARAMS // len(COLUMNS)
ROWS_PER_CHUNK = ROWS_PER_STATEMENT  # rows per executemany in `upsert`
COPY_CHUNK_ROWS = 100_000  # one CSV chunk built (in a thread) while the previous one streams
SQLITE_CHUNK_ROWS = 50_000  # rows per executemany, so a progress bar moves and memory stays flat

# How long each interval is kept by `apply_retention`; intervals not listed are kept forever.
DEFAULT_RETENTION: dict[str, timedelta] = {"3": timedelta(days=30), "15": timedelta(days=180)}

ProgressFn = Callable[[int], None]  # called with the number of candles just written


# --------------------------------------------------------------------------------------------------
# Input normalisation: everything becomes a list of CandleSeries, one per (symbol, interval),
# sorted by open time without duplicate open times (the last occurrence wins, as an upsert would).


def _check_interval(interval: str) -> None:
    if interval not in INTERVAL_MS:
        raise ValueError(f"unknown interval {interval!r} (a Bybit code: {', '.join(INTERVAL_MS)})")


def _concat(parts: list[CandleSeries]) -> CandleSeries:
    first = parts[0]
    turnover = None
    if any(p.turnover is not None for p in parts):
        # keep the turnover that is known; NaN elsewhere is written as NULL, which never overwrites one
        turnover = np.concatenate([np.full(len(p), np.nan) if p.turnover is None else p.turnover for p in parts])
    return CandleSeries.of_columns(first.symbol, first.interval, np.concatenate([p.open_ms for p in parts]),
                                   (np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS), turnover=turnover)


def normalize(series: Iterable[CandleSeries]) -> list[CandleSeries]:
    """Group by (symbol, interval), sort by open time, keep the last of duplicate open times."""
    groups: dict[tuple[str, str], list[CandleSeries]] = {}
    for s in series:
        _check_interval(s.interval)
        if len(s):
            groups.setdefault((s.symbol, s.interval), []).append(s)
    out: list[CandleSeries] = []
    for key in sorted(groups):
        parts = groups[key]
        s = parts[0] if len(parts) == 1 else _concat(parts)
        ms = np.asarray(s.open_ms, dtype=np.int64)
        if len(ms) > 1 and not bool(np.all(np.diff(ms) > 0)):
            order = np.argsort(ms, kind="stable")
            ms_sorted = ms[order]
            last = np.append(ms_sorted[1:] != ms_sorted[:-1], True)  # last of each run of equal times
            s = s.take(order[last])
        out.append(s)
    return out


def _as_series_list(data: CandleSeries | Iterable[CandleSeries] | Iterable[Candle]) -> list[CandleSeries]:
    if isinstance(data, CandleSeries):
        return normalize([data])
    items: list[CandleSeries | Candle] = list(data)
    if candles := [c for c in items if isinstance(c, Candle)]:
        by_key: dict[tuple[str, str], list[Candle]] = {}
        for c in candles:
            by_key.setdefault((c.symbol, c.interval), []).append(c)
        return normalize(CandleSeries.from_candles(k[0], k[1], cs) for k, cs in by_key.items())
    return normalize(s for s in items if isinstance(s, CandleSeries))


def _finite_check(s: CandleSeries) -> None:
    for f in FIELDS:
        if not bool(np.all(np.isfinite(getattr(s, f)))):
            raise ValueError(f"{s.symbol} {s.interval}: {f} holds NaN or infinity; nothing was written")


# --------------------------------------------------------------------------------------------------
# Row building for the statement paths


def _num_text(x: float) -> str | None:
    # shortest round-trip text: exact for the Numeric column, and cheaper than building a Decimal
    return None if math.isnan(x) else repr(x)


def _rows_from_candles(candles: Sequence[Candle], *, as_text: bool) -> list[dict[str, Any]]:
    """The live path: few candles, build the rows directly (no numpy round trip)."""
    rows = []
    for c in candles:
        _check_interval(c.interval)
        vals = (c.open, c.high, c.low, c.close, c.volume)
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"{c.symbol} {c.interval} {c.open_time}: a price or volume is NaN or infinity")
        t = c.turnover if c.turnover is not None and not math.isnan(c.turnover) else None
        if as_text:
            rows.append({"symbol": c.symbol, "interval": c.interval, "open_time": c.open_time,
                         "open": repr(vals[0]), "high": repr(vals[1]), "low": repr(vals[2]), "close": repr(vals[3]),
                         "volume": repr(vals[4]), "turnover": None if t is None else repr(t)})
        else:
            rows.append({"symbol": c.symbol, "interval": c.interval, "open_time": c.open_time,
                         "open": vals[0], "high": vals[1], "low": vals[2], "close": vals[3], "volume": vals[4],
                         "turnover": t})
    return rows


def rows_from_series(s: CandleSeries, *, as_text: bool) -> list[dict[str, Any]]:
    conv: Callable[[float], Any] = _num_text if as_text else (lambda x: None if math.isnan(x) else x)
    times = [ms_to_dt(ms) for ms in s.open_ms.tolist()]
    cols = [[conv(x) for x in getattr(s, f).tolist()] for f in FIELDS]
    turnover = [None] * len(s) if s.turnover is None else [conv(x) for x in s.turnover.tolist()]
    return [{"symbol": s.symbol, "interval": s.interval, "open_time": t, "open": o, "high": h, "low": lo,
             "close": c, "volume": v, "turnover": tv}
            for t, o, h, lo, c, v, tv in zip(times, *cols, turnover, strict=True)]


def _dedupe_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # one statement may not touch a row twice (PostgreSQL refuses); the last occurrence wins
    seen: dict[tuple[str, str, datetime], dict[str, Any]] = {}
    for r in rows:
        seen[(r["symbol"], r["interval"], r["open_time"])] = r
    return rows if len(seen) == len(rows) else list(seen.values())


def _changed(excluded: Any) -> ColumnElement[bool]:
    """Update only when something differs: identical re-imports rewrite nothing."""
    return or_(*(TABLE.c[f].is_distinct_from(excluded[f]) for f in FIELDS),
               TABLE.c.turnover.is_distinct_from(func.coalesce(excluded.turnover, TABLE.c.turnover)))


def upsert_statement(dialect: str, rows: list[dict[str, Any]] | None = None) -> Any:
    """`INSERT ... ON CONFLICT (symbol, interval, open_time) DO UPDATE` for PostgreSQL or SQLite.

    Without rows it is the executemany form (compiled once, cached by SQLAlchemy); with rows, one
    multi-row VALUES statement (compiled per call: the baseline in bench/candles.py).
    """
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(TABLE)
    if rows is not None:
        ins = ins.values(rows)
    set_: dict[str, Any] = {f: ins.excluded[f] for f in FIELDS}
    set_["turnover"] = func.coalesce(ins.excluded.turnover, TABLE.c.turnover)  # never erase a known turnover
    return ins.on_conflict_do_update(index_elements=list(KEY), set_=set_, where=_changed(ins.excluded))


# --------------------------------------------------------------------------------------------------
# PostgreSQL COPY helpers


_UPDATE_SET = ", ".join(f"{f} = EXCLUDED.{f}" for f in FIELDS) + \
    ", turnover = COALESCE(EXCLUDED.turnover, candles.turnover)"
_DISTINCT = " OR ".join([f"candles.{f} IS DISTINCT FROM EXCLUDED.{f}" for f in FIELDS]
                        + ["candles.turnover IS DISTINCT FROM COALESCE(EXCLUDED.turnover, candles.turnover)"])
PG_MERGE = (
    "INSERT INTO candles (symbol, interval, open_time, open, high, low, close, volume, turnover) "
    "SELECT symbol, interval, TIMESTAMPTZ 'epoch' + open_ms * INTERVAL '1 millisecond', "
    "open, high, low, close, volume, turnover FROM pd_candles_load "
    f"ON CONFLICT (symbol, interval, open_time) DO UPDATE SET {_UPDATE_SET} WHERE {_DISTINCT}"
)
PG_LOAD_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS pd_candles_load (symbol text, interval text, open_ms bigint, "
    "open numeric, high numeric, low numeric, close numeric, volume numeric, turnover numeric) ON COMMIT DROP"
)
SQLITE_UPSERT = (
    "INSERT INTO candles (symbol, interval, open_time, open, high, low, close, volume, turnover) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    f"ON CONFLICT (symbol, interval, open_time) DO UPDATE SET {_UPDATE_SET} WHERE {_DISTINCT}"
)


def _csv_chunk(s: CandleSeries, lo: int, hi: int, *, direct: bool) -> bytes:
    """Rows lo..hi of a series as COPY CSV. Arrow formats floats as shortest round-trip text, in C++."""
    n = hi - lo
    data: dict[str, Any] = {"symbol": pa.repeat(s.symbol, n), "interval": pa.repeat(s.interval, n)}
    ms = s.open_ms[lo:hi]
    if direct:  # straight into candles: open_time as '2026-02-08 08:30:00.000Z'
        data["open_time"] = pa.array(ms.astype("datetime64[ms]"), pa.timestamp("ms", tz="UTC"))
    else:  # into the temp table: the merge turns milliseconds into timestamptz exactly
        data["open_ms"] = pa.array(ms)
    for f in FIELDS:
        data[f] = pa.array(getattr(s, f)[lo:hi])
    # NaN turnover -> empty field -> NULL
    data["turnover"] = (pa.nulls(n, pa.float64()) if s.turnover is None
                        else pa.array(s.turnover[lo:hi], from_pandas=True))
    buf = io.BytesIO()
    pacsv.write_csv(pa.table(data), buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


async def _csv_stream(series: list[CandleSeries], *, direct: bool, progress: ProgressFn | None,
                      chunk_rows: int) -> AsyncIterator[bytes]:
    """CSV chunks for COPY; the next chunk is built in a thread while the current one streams."""
    pieces = [(s, lo, min(lo + chunk_rows, len(s))) for s in series for lo in range(0, len(s), chunk_rows)]
    if not pieces:
        return

    def build(i: int) -> bytes:
        s, lo, hi = pieces[i]
        return _csv_chunk(s, lo, hi, direct=direct)

    pending = asyncio.ensure_future(asyncio.to_thread(build, 0))
    try:
        for i in range(len(pieces)):
            data = await pending
            if i + 1 < len(pieces):
                pending = asyncio.ensure_future(asyncio.to_thread(build, i + 1))
            yield data
            if progress is not None:
                progress(pieces[i][2] - pieces[i][1])
    finally:
        if not pending.done():
            pending.cancel()


# --------------------------------------------------------------------------------------------------


def _ms_expr(dialect: str) -> ColumnElement[int]:
    """open_time as epoch milliseconds, computed by the database."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", TABLE.c.open_time) * 1000, postgresql.BIGINT)
    # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff'; julianday is exact to well under a millisecond here
    return cast(func.round((func.julianday(TABLE.c.open_time) - 2440587.5) * 86400000.0), Integer)


def _series_from_rows(symbol: str, interval: str, rows: Sequence[Sequence[Any]]) -> CandleSeries:
    """Rows of (open_ms, open, high, low, close, volume, turnover) -> CandleSeries."""
    if not rows:
        empty = np.empty(0)
        return CandleSeries.of_columns(symbol, interval, np.empty(0, dtype=np.int64), (empty for _ in FIELDS))
    cols = list(zip(*rows, strict=True))
    turnover = None if any(t is None for t in cols[6]) else np.array(cols[6], dtype=np.float64)
    return CandleSeries.of_columns(symbol, interval, np.array(cols[0], dtype=np.int64),
                                   (np.array(c, dtype=np.float64) for c in cols[1:6]), turnover=turnover)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CandleStore:
    """Candles of every symbol and interval in one table, on PostgreSQL or SQLite.

    `clock` is "now" for `history` (the warm-up of a live bot): a stored candle that had not closed by then
    is skipped. storage/ may read the wall clock; tests inject their own."""

    def __init__(self, db: AsyncEngine, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.engine = db
        self.clock = clock
        self.refused: Counter[Refusal] = Counter()  # stored candles skipped on reads, per reason
        self.dialect = db.dialect.name  # "postgresql" | "sqlite"
        if self.dialect not in {"postgresql", "sqlite"}:
            raise ValueError(f"CandleStore supports PostgreSQL and SQLite, not {self.dialect}")
        # the exact text SQLAlchemy stores for a time on SQLite, for the raw executemany path
        time_type = TABLE.c.open_time.type.dialect_impl(db.dialect)
        self._sqlite_time: Callable[[Any], Any] = time_type.bind_processor(db.dialect) or str
        self._statement = upsert_statement(self.dialect)

    # ---- writes ------------------------------------------------------------------------------------

    async def upsert(self, candles: Iterable[Candle] | CandleSeries | Iterable[CandleSeries], *,
                     progress: ProgressFn | None = None) -> int:
        """Insert or update candles (a batch of Candle, one CandleSeries or several), in one transaction.

        Returns the number of distinct candles given. `INSERT ... ON CONFLICT DO UPDATE` as executemany
        of one statement that SQLAlchemy compiles once: asyncpg runs it as a prepared statement with
        pipelined binds (SQLite: sqlite3's C executemany). Each row binds 9 parameters, so asyncpg's
        32,767 limit cannot bite; rows are built and sent in chunks so memory stays flat.
        """
        as_text = self.dialect == "postgresql"  # SQLite stores REAL anyway: floats go straight in
        items: Any = [candles] if isinstance(candles, CandleSeries) else (
            candles if isinstance(candles, list) else list(candles))
        if not items:
            return 0
        if isinstance(items[0], Candle):  # the live path: a few candles, rows built directly
            chunks: Iterable[list[dict[str, Any]]] = [_dedupe_rows(_rows_from_candles(items, as_text=as_text))]
        else:
            groups = normalize(items)
            for s in groups:
                _finite_check(s)
            chunks = (rows_from_series(s.take(slice(lo, lo + ROWS_PER_CHUNK)), as_text=as_text)
                      for s in groups for lo in range(0, len(s), ROWS_PER_CHUNK))
        total = 0
        async with self.engine.begin() as conn:
            for rows in chunks:
                await conn.execute(self._statement, rows)
                total += len(rows)
                if progress is not None:
                    progress(len(rows))
        return total

    async def bulk_load(self, data: CandleSeries | Iterable[CandleSeries] | Iterable[Candle], *,
                        progress: ProgressFn | None = None) -> int:
        """Load many candles fast, with upsert semantics, in one transaction. Returns the candles given.

        PostgreSQL: COPY (direct when no stored candle falls inside the loaded ranges, else via a temp
        table and a merge). SQLite: executemany. All or nothing: on any error nothing is written.
        """
        series = _as_series_list(data)
        for s in series:
            _finite_check(s)
        total = sum(len(s) for s in series)
        if not total:
            return 0
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await self._pg_bulk(conn, series, progress)
            else:
                await self._sqlite_bulk(conn, series, progress)
        return total

    async def _pg_bulk(self, conn: AsyncConnection, series: list[CandleSeries],
                       progress: ProgressFn | None, chunk_rows: int = COPY_CHUNK_ROWS) -> None:
        # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement: COPY on the raw
        # connection must run inside that transaction, so make sure it has begun
        await conn.exec_driver_sql("SELECT 1")
        raw = (await conn.get_raw_connection()).driver_connection
        if raw is None or not raw.is_in_transaction():
            raise RuntimeError("bulk_load: the asyncpg connection is not inside the transaction")
        overlapping = await self._overlapping(conn, series)
        columns = list(COLUMNS)
        if not overlapping:
            import asyncpg  # only PostgreSQL gets here

            try:
                # nothing stored can collide: COPY straight into the table (about twice the merge's speed)
                async with conn.begin_nested():
                    await raw.copy_to_table("candles", source=_csv_stream(
                        series, direct=True, progress=progress, chunk_rows=chunk_rows), columns=columns, format="csv")
                log.debug("bulk_load: %d series copied directly", len(series))
                return
            except asyncpg.UniqueViolationError:
                # a concurrent writer (the live feed) stored a candle meanwhile: merge instead
                log.info("bulk_load: a concurrent write collided with the direct COPY; merging instead")
        await conn.exec_driver_sql(PG_LOAD_TABLE)
        await conn.exec_driver_sql("TRUNCATE pd_candles_load")
        await raw.copy_to_table("pd_candles_load", source=_csv_stream(
            series, direct=False, progress=progress, chunk_rows=chunk_rows),
            columns=["symbol", "interval", "open_ms", *VALUES], format="csv")
        await conn.exec_driver_sql(PG_MERGE)
        log.debug("bulk_load: %d series merged through a temp table", len(series))

    async def _overlapping(self, conn: AsyncConnection, series: list[CandleSeries]) -> bool:
        """Does any stored candle fall inside the open-time range of a series about to be loaded?"""
        t = TABLE.c
        for s in series:
            found = await conn.scalar(
                select(literal_column("1")).where(
                    t.symbol == s.symbol, t.interval == s.interval,
                    t.open_time >= ms_to_dt(int(s.open_ms[0])), t.open_time <= ms_to_dt(int(s.open_ms[-1])),
                ).limit(1))
            if found is not None:
                return True
        return False

    def _sqlite_times(self, ms: np.ndarray) -> list[str]:
        # the exact text SQLAlchemy's DateTime stores on SQLite, vectorised; checked against it once
        text_times = np.datetime_as_string(ms.astype("datetime64[ms]").astype("datetime64[us]"), unit="us")
        times = [t.replace("T", " ") for t in text_times.tolist()]
        if times and times[0] != self._sqlite_time(ms_to_dt(int(ms[0]))):
            return [self._sqlite_time(ms_to_dt(int(m))) for m in ms.tolist()]
        return times

    async def _sqlite_bulk(self, conn: AsyncConnection, series: list[CandleSeries],
                           progress: ProgressFn | None) -> None:
        for s in series:
            for lo in range(0, len(s), SQLITE_CHUNK_ROWS):
                part = s.take(slice(lo, lo + SQLITE_CHUNK_ROWS))
                turnover = [None] * len(part) if part.turnover is None else [
                    None if math.isnan(x) else x for x in part.turnover.tolist()]
                rows = list(zip([s.symbol] * len(part), [s.interval] * len(part), self._sqlite_times(part.open_ms),
                                *(getattr(part, f).tolist() for f in FIELDS), turnover, strict=True))
                await conn.exec_driver_sql(SQLITE_UPSERT, rows)
                if progress is not None:
                    progress(len(part))

    async def apply_retention(self, now: datetime, keep: Mapping[str, timedelta] | None = None) -> dict[str, int]:
        """Delete candles whose open time is before `now - keep[interval]`. Returns rows deleted per interval.

        `now` comes from the caller (a job's clock or a replay's candle time); intervals not in `keep`
        are left alone.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        policy = DEFAULT_RETENTION if keep is None else keep
        deleted: dict[str, int] = {}
        async with self.engine.begin() as conn:
            for interval, span in sorted(policy.items()):
                _check_interval(interval)
                result = await conn.execute(
                    delete(TABLE).where(TABLE.c.interval == interval, TABLE.c.open_time < now - span))
                deleted[interval] = result.rowcount or 0
        if any(deleted.values()):
            log.info("candle retention deleted %s", ", ".join(f"{n} of interval {i}" for i, n in deleted.items()))
        return deleted

    # ---- reads -------------------------------------------------------------------------------------

    def _value_columns(self) -> list[ColumnElement[Any]]:
        # read as float8: the stored decimal is the float's shortest text, so the float comes back exact
        return [_ms_expr(self.dialect).label("open_ms"),
                *(cast(TABLE.c[f], Float).label(f) for f in VALUES)]

    def _sane(self, s: CandleSeries, now: datetime | None) -> CandleSeries:
        """The sane rows of what was read; the others are counted and named in one log line."""
        sane, refused = sane_series(s, now)
        if refused:
            self.refused.update(refused)
            log.warning("candle store: skipped %d unusable stored candle(s) of %s %s (%s); they stay in the "
                        "table, delete or re-import them", len(s) - len(sane), s.symbol, s.interval,
                        ", ".join(f"{r.value}: {n}" for r, n in sorted(refused.items(), key=lambda i: i[0].value)))
        return sane

    async def load(self, symbol: str, interval: str, limit: int, *, now: datetime | None = None) -> CandleSeries:
        """The latest `limit` candles, oldest first (an engine's warm-up), without the ones that are not sane
        (given `now`, also without those that had not closed by then); so possibly fewer than `limit`."""
        _check_interval(interval)
        t = TABLE.c
        stmt = (select(*self._value_columns()).where(t.symbol == symbol, t.interval == interval)
                .order_by(t.open_time.desc()).limit(limit))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return self._sane(_series_from_rows(symbol, interval, rows[::-1]), now)

    async def history(self, symbol: str, interval: str, limit: int) -> list[Candle]:
        """`load` as Candle objects, closed by the store's clock: the shape of `Feed.history`."""
        return list((await self.load(symbol, interval, limit, now=self.clock())).candles())

    async def series(self, symbol: str, interval: str, start: datetime | None = None,
                     end: datetime | None = None) -> CandleSeries:
        """Candles with start <= open time < end, oldest first."""
        _check_interval(interval)
        t = TABLE.c
        stmt = select(*self._value_columns()).where(t.symbol == symbol, t.interval == interval)
        if start is not None:
            stmt = stmt.where(t.open_time >= start)
        if end is not None:
            stmt = stmt.where(t.open_time < end)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt.order_by(t.open_time))).all()
        return self._sane(_series_from_rows(symbol, interval, rows), None)

    async def last_open_time(self, symbol: str, interval: str) -> datetime | None:
        """Open time of the newest stored candle (where a live feed's backfill starts)."""
        t = TABLE.c
        async with self.engine.connect() as conn:
            return await conn.scalar(select(func.max(t.open_time)).where(t.symbol == symbol, t.interval == interval))

    async def keys(self, symbols: Iterable[str] | None = None,
                   intervals: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """The (symbol, interval) pairs that hold candles, sorted."""
        t = TABLE.c
        stmt = select(t.symbol, t.interval).group_by(t.symbol, t.interval).order_by(t.symbol, t.interval)
        if symbols is not None:
            stmt = stmt.where(t.symbol.in_(list(symbols)))
        if intervals is not None:
            stmt = stmt.where(t.interval.in_(list(intervals)))
        async with self.engine.connect() as conn:
            return [(r[0], r[1]) for r in (await conn.execute(stmt)).all()]

    async def count(self, symbol: str | None = None, interval: str | None = None) -> int:
        t = TABLE.c
        stmt = select(func.count()).select_from(TABLE)
        if symbol is not None:
            stmt = stmt.where(t.symbol == symbol)
        if interval is not None:
            stmt = stmt.where(t.interval == interval)
        async with self.engine.connect() as conn:
            return int(await conn.scalar(stmt) or 0)

    async def gaps(self, symbol: str | None = None, interval: str | None = None) -> list[Gap]:
        """Holes inside each stored (symbol, interval) series, found by the database (LAG over the PK)."""
        t = TABLE.c
        ms = _ms_expr(self.dialect)
        inner = select(t.symbol, t.interval, ms.label("ms"),
                       func.lag(ms).over(partition_by=(t.symbol, t.interval), order_by=t.open_time).label("prev"))
        if symbol is not None:
            inner = inner.where(t.symbol == symbol)
        if interval is not None:
            inner = inner.where(t.interval == interval)
        sub = inner.subquery()
        step = case(INTERVAL_MS, value=sub.c.interval)
        stmt = (select(sub.c.symbol, sub.c.interval, sub.c.prev, sub.c.ms)
                .where(sub.c.prev.is_not(None), sub.c.ms - sub.c.prev > step)
                .order_by(sub.c.symbol, sub.c.interval, sub.c.ms))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [Gap(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    async def stats(self) -> CandleStats:
        t = TABLE.c
        per_interval = (select(t.interval, func.count(distinct(t.symbol)), func.count(), func.min(t.open_time),
                               func.max(t.open_time)).group_by(t.interval))
        async with self.engine.connect() as conn:
            intervals = sorted((IntervalStats(r[0], int(r[1]), int(r[2]), r[3], r[4])
                                for r in (await conn.execute(per_interval)).all()),
                               key=lambda i: INTERVAL_MS.get(i.interval, 0))  # 3 before 15 before 60
            symbols = int(await conn.scalar(select(func.count(distinct(t.symbol)))) or 0)
            file_bytes: int | None = None
            if self.dialect == "postgresql":
                table_bytes = int(await conn.scalar(text("SELECT pg_total_relation_size('candles')")) or 0)
                database_bytes = int(await conn.scalar(text("SELECT pg_database_size(current_database())")) or 0)
            else:
                page_size = int(await conn.scalar(text("PRAGMA page_size")) or 0)
                database_bytes = page_size * int(await conn.scalar(text("PRAGMA page_count")) or 0)
                try:  # dbstat is a compile-time option of SQLite
                    table_bytes = int(await conn.scalar(text(
                        "SELECT sum(pgsize) FROM dbstat WHERE name = 'candles' OR name LIKE 'sqlite_autoindex_candles%'"
                    )) or 0)
                except Exception:
                    table_bytes = None
                path = self.engine.url.database
                if path and path != ":memory:":
                    file_bytes = sum(p.stat().st_size for p in (Path(path), Path(path + "-wal")) if p.exists())
        gaps = await self.gaps()
        return CandleStats(self.dialect, symbols, sum(i.candles for i in intervals), intervals, len(gaps),
                       sum(g.missing for g in gaps), table_bytes, database_bytes, file_bytes)

