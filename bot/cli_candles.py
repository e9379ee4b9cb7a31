"""`python -m bot candles import|export|backfill`: candle files in and out, and Bybit REST backfill.

Every command opens the database from the settings and refuses to run unless it is at the newest
migration (exit 3, like the host). A bad candle file stops `import` with one line naming the file, the
line and the reason (exit 1) before anything is written; `--skip-bad` writes the good rows and lists
the lines it skipped. Progress bars go to stderr and only when it is a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli import EXIT_OK, CliError, SettingsFn, database, positive, run_command
from core.market.candle import INTERVAL_MS, BadInterval, Candle, parse_interval

if TYPE_CHECKING:
    from rich.progress import Progress

    from storage.candle_store import CandleStore
    from storage.funding_store import FundingStore

log = logging.getLogger("phantomdesk")

REST_URL_ENV = "BYBIT_REST_URL"  # points `backfill` at another REST server (a relay, a fake in tests)
REST_PAGE = 1000  # get_kline's maximum limit
REST_CONCURRENCY = 4  # (symbol, interval) pairs fetched at once; far under Bybit's 600 requests / 5 s


def register(subparsers: Any, settings: SettingsFn) -> None:
    """Add `candles import|export|backfill` to the `python -m bot` parser."""
    candles = subparsers.add_parser("candles", help="candle files in and out, Bybit REST backfill")
    sub = candles.add_subparsers(dest="candles_command", required=True, metavar="{import,export,backfill}")

    imp = sub.add_parser("import", help="import a candle file, or every candle file in a folder",
                         description="Files are named like BTC-USDT_15m_bybit.csv (CSV or Parquet). Every row "
                                     "is checked first; a bad row stops the import and nothing is written.")
    imp.add_argument("path", type=Path, help="a .csv/.parquet candle file or a folder (searched recursively)")
    imp.add_argument("--skip-bad", action="store_true",
                     help="write the good rows, skip and list the bad lines (an unreadable file still fails)")
    imp.set_defaults(func=_command(settings, _import))

    exp = sub.add_parser("export", help="write stored candles as one file per symbol and interval")
    exp.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    exp.add_argument("--symbols", type=_symbol_list, help="comma-separated, e.g. BTCUSDT,ETHUSDT (default: all)")
    exp.add_argument("--interval", type=_interval_list, help="comma-separated, e.g. 15,3 or 15m,1h (default: all)")
    exp.add_argument("--exchange", default="bybit", help="the exchange part of the file names (default: bybit)")
    exp.add_argument("--out", type=Path, required=True, help="the folder to write into")
    exp.add_argument("--funding", action="store_true",
                     help="also write the stored funding settlements, one BASE-QUOTE_funding_bybit.csv per symbol")
    exp.set_defaults(func=_command(settings, _export))

    bf = sub.add_parser("backfill", help="fetch closed candles from Bybit's REST API into the database")
    bf.add_argument("--symbols", type=_symbol_list, required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    bf.add_argument("--interval", type=_interval_list, default=["15"], help="comma-separated (default: 15)")
    bf.add_argument("--days", type=positive(float, "a number of days"), default=30.0,
                    help="how far back from now (default: 30)")
    bf.add_argument("--endpoint", default=None,
                    help=f"REST base URL (default: ${REST_URL_ENV} or https://api.bybit.com)")
    bf.add_argument("--funding", action="store_true",
                    help="also fetch the symbols' funding settlements (Bybit's public funding history)")
    bf.set_defaults(func=_command(settings, _backfill))


def _symbol_list(text: str) -> list[str]:
    symbols = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not symbols:
        raise argparse.ArgumentTypeError("give at least one symbol")
    return symbols


def _interval_list(text: str) -> list[str]:
    try:
        return list(dict.fromkeys(parse_interval(i) for i in text.split(",") if i.strip()))
    except BadInterval as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _command(settings: SettingsFn, body: Callable[[CandleStore, argparse.Namespace], Any]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        url = settings().database_url
        return run_command(lambda: asyncio.run(_with_store(url, body, args)))

    return run


async def _with_store(url: str, body: Callable[[CandleStore, argparse.Namespace], Any],
                      args: argparse.Namespace) -> int:
    from storage.candle_store import CandleStore

    async with database(url, f"candles {args.candles_command}") as engine:
        result = await body(CandleStore(engine), args)
    return EXIT_OK if result is None else int(result)


@contextmanager
def _progress() -> Iterator[Progress]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, disable=not console.is_terminal, transient=True) as progress:
        yield progress


# -- import -------------------------------------------------------------------------------------------------


async def _import(store: CandleStore, args: argparse.Namespace) -> int:
    from storage.candle_files import BadCandleFile, BadLine, read_candle_file

    root: Path = args.path
    try:
        files, ignored = await asyncio.to_thread(_list_files, root)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    for path in ignored:
        print(f"ignored {path}: not named like BASE-QUOTE_<tf>_<exchange>.csv")
    if not files:
        raise CliError(f"{root}: no candle files (named like BTC-USDT_15m_bybit.csv) found")

    # check every file before writing anything: a bad file anywhere means nothing is written
    now = datetime.now(UTC)  # a candle that has not closed yet must not reach the live desk's store
    loaded: list[tuple[Path, Any, list[BadLine]]] = []
    with _progress() as progress:
        task = progress.add_task("checking", total=len(files))
        for path in files:
            try:
                series, bad = await asyncio.to_thread(read_candle_file, path, skip_bad=args.skip_bad, now=now)
            except BadCandleFile as exc:
                raise CliError(f"{exc} (nothing was imported)") from None
            loaded.append((path, series, bad))
            progress.advance(task)
    _refuse_overlaps(loaded)

    total = sum(len(series) for _, series, _ in loaded)
    with _progress() as progress:
        task = progress.add_task("importing", total=total)
        # one transaction: all files or none
        await store.bulk_load([series for _, series, _ in loaded if len(series)],
                              progress=lambda n: progress.advance(task, n))
    skipped = 0
    for path, series, bad in loaded:
        print(f"{path.name}: {len(series)} candles -> {series.symbol} {series.interval}"
              + (f", {len(bad)} bad lines skipped" if bad else ""))
        for line in bad:
            print(f"  skipped {path.name}:{line.line}: {line.reason}")
        skipped += len(bad)
    print(f"imported {total} candles from {len(loaded)} file(s)"
          + (f"; skipped {skipped} bad lines" if skipped else ""))
    return EXIT_OK


def _list_files(root: Path) -> tuple[list[Path], list[Path]]:
    """The candle files under root, and the .csv/.parquet files there whose names do not say what they hold."""
    from storage.candle_files import NAME, candle_files

    files = candle_files(root)
    ignored = [] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.suffix.lower() in {".csv", ".parquet"} and not NAME.match(p.stem))
    return files, ignored


def _refuse_overlaps(loaded: list[tuple[Path, Any, Any]]) -> None:
    """Two files for the same symbol and interval may not cover the same time: which would win?"""
    seen: dict[tuple[str, str], list[tuple[int, int, Path]]] = {}
    for path, series, _ in loaded:
        if not len(series):
            continue
        lo, hi = int(series.open_ms[0]), int(series.open_ms[-1])
        for other_lo, other_hi, other in seen.get((series.symbol, series.interval), []):
            if lo <= other_hi and other_lo <= hi:
                raise CliError(f"{path.name} and {other.name} both hold {series.symbol} {series.interval} candles "
                               "for the same time; import them separately (nothing was imported)")
        seen.setdefault((series.symbol, series.interval), []).append((lo, hi, path))


# -- export -------------------------------------------------------------------------------------------------


async def _export(store: CandleStore, args: argparse.Namespace) -> int:
    from storage.candle_files import write_candle_file

    keys = await store.keys(args.symbols, args.interval)
    if not keys:
        raise CliError("no stored candles match" + (f" symbols {','.join(args.symbols)}" if args.symbols else "")
                       + (f" interval {','.join(args.interval)}" if args.interval else ""))
    done: list[tuple[Path, int]] = []
    with _progress() as progress:
        task = progress.add_task("exporting", total=len(keys))
        for symbol, interval in keys:
            series = await store.series(symbol, interval)
            path = await asyncio.to_thread(write_candle_file, series, args.out, args.format, args.exchange)
            done.append((path, len(series)))
            progress.advance(task)
    for path, n in done:  # after the bar: printing under a live bar garbles the terminal
        print(f"{path}: {n} candles")
    print(f"exported {sum(n for _, n in done)} candles in {len(done)} file(s) to {args.out}")
    if args.funding:
        from storage.funding_files import write_funding_file
        from storage.funding_store import FundingStore

        funding = FundingStore(store.engine)
        for symbol in sorted({s for s, _ in keys}):
            rows = await funding.rows(symbol)
            if rows:
                print(f"{write_funding_file(symbol, rows, args.out)}: {len(rows)} settlements")
            else:
                print(f"{symbol}: no funding stored (candles backfill --funding fetches it)")
    return EXIT_OK


# -- backfill -----------------------------------------------------------------------------------------------


async def _backfill(store: CandleStore, args: argparse.Namespace) -> int:
    from core.exchange.bybit_public import KlineClient

    if args.days <= 0:
        raise CliError("--days must be positive")
    endpoint = args.endpoint or os.environ.get(REST_URL_ENV) or None
    client = KlineClient(endpoint)
    now = datetime.now(UTC)  # bot/ is allowed a wall clock; core/ is not
    start = now - timedelta(days=args.days)
    jobs = [(s, i) for s in args.symbols for i in args.interval]
    slots = asyncio.Semaphore(REST_CONCURRENCY)
    try:
        with _progress() as progress:
            expected = sum(int(args.days * 86_400_000 // INTERVAL_MS[i]) for _, i in jobs)
            task = progress.add_task("backfilling", total=expected)

            async def one(symbol: str, interval: str) -> int:
                async with slots:
                    return await backfill_pair(store, client, symbol, interval, start, now,
                                               progress=lambda n: progress.advance(task, n))

            results = await asyncio.gather(*(one(s, i) for s, i in jobs), return_exceptions=True)
    finally:
        await asyncio.to_thread(client.close)
    failed = 0
    for (symbol, interval), result in zip(jobs, results, strict=True):
        if isinstance(result, BaseException):
            failed += 1
            print(f"{symbol} {interval}: failed: {_reason(result)}", file=sys.stderr)
        else:
            print(f"{symbol} {interval}: {result} candles")
    if args.funding:
        from storage.funding_store import FundingStore

        funding = FundingStore(store.engine)
        client = KlineClient(endpoint)
        try:
            for symbol in args.symbols:
                try:
                    n = await backfill_funding(funding, client, symbol, start, now)
                    print(f"{symbol} funding: {n} settlements")
                except Exception as exc:  # one symbol's failure is said, the others still come
                    failed += 1
                    print(f"{symbol} funding: failed: {_reason(exc)}", file=sys.stderr)
        finally:
            await asyncio.to_thread(client.close)
    if failed:
        raise CliError(f"{failed} of {len(jobs) + (len(args.symbols) if args.funding else 0)} backfills failed "
                       "(the others were stored)")
    return EXIT_OK


async def backfill_funding(store: FundingStore, client: Any, symbol: str, start: datetime, now: datetime) -> int:
    """Store the symbol's funding settlements in [start, now], walking back from now a page at a time
    (Bybit serves at most 200 per request, newest first). Returns how many were fetched."""
    from core.exchange.bybit_public import FUNDING_PAGE

    start_ms, end_ms = int(start.timestamp() * 1000), int(now.timestamp() * 1000)
    fetched = 0
    while end_ms >= start_ms:
        page = await asyncio.to_thread(client.get_funding_history, symbol, end_ms=end_ms, limit=FUNDING_PAGE)
        rows = [(ms, rate) for ms, rate in page if start_ms <= ms <= end_ms]
        fetched += await store.upsert(symbol, rows)
        if len(page) < FUNDING_PAGE or not page or page[0][0] <= start_ms:
            break
        end_ms = page[0][0] - 1
    return fetched


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


async def backfill_pair(store: CandleStore, client: Any, symbol: str, interval: str, start: datetime,
                        now: datetime, progress: Callable[[int], None] | None = None) -> int:
    """Store the closed candles of one pair opening in [start, now), walking back from now in
    windows of <= 1000 candles (Bybit answers newest first; each page is reordered oldest first).
    Stops at the first empty window: nothing older exists. Returns the candles stored."""
    from core.market.bybit_feed import BadMessage, candle_start_ms, parse_rest_row

    size = INTERVAL_MS[interval]
    first = candle_start_ms(int(start.timestamp() * 1000), interval)
    if first < int(start.timestamp() * 1000):
        first += size  # only candles that open inside the window
    hi = candle_start_ms(int(now.timestamp() * 1000), interval)  # the open candle: filtered out below
    stored = 0
    while hi >= first:
        lo = max(first, hi - (REST_PAGE - 1) * size)
        rows, server_ms = await asyncio.to_thread(client.get_kline, symbol, interval, start_ms=lo, end_ms=hi,
                                                  limit=REST_PAGE)
        if not rows:
            break
        # closed = ended by now, by our clock and by the server's (a clock running ahead must not pass
        # off the still-open candle as closed)
        now_ms = int(now.timestamp() * 1000) if server_ms is None else min(int(now.timestamp() * 1000), server_ms)
        page: list[Candle] = []
        for row in rows:
            try:
                candle = parse_rest_row(symbol, interval, row)
            except BadMessage as exc:
                log.warning("backfill: skipped a bad row: %s", exc)
                continue
            if lo <= candle.open_ms <= hi and candle.open_ms + size <= now_ms:
                page.append(candle)
        page.sort(key=lambda c: c.open_ms)
        stored += await store.upsert(page)
        if progress is not None:
            progress(len(page))
        hi = lo - size
    return stored
