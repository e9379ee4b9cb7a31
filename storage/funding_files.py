"""Funding-rate files beside the candle files: one per symbol, read into a core.funding.FundingSchedule.

Format (CSV or Parquet): named `<BASE>-<QUOTE>_funding_<source>.csv` (e.g. `BTC-USDT_funding_bybit.csv`),
header `timestamp_ms,rate`: the settlement time in UTC milliseconds, strictly increasing, and the rate as
a fraction (0.0001 = 0.01 %; a long pays it, a short receives it). `candles backfill --funding` writes the
same rows into the database, `candles export --funding` back to such files. A bad row gives
`file:line: reason`, like the candle files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path

from core.funding import FundingSchedule
from storage.candle_files import BadCandleFile, load_frame

NAME = re.compile(r"^(?P<base>[A-Z0-9]+)-(?P<quote>[A-Z0-9]+)_funding_(?P<source>[a-z0-9]+)$", re.IGNORECASE)
COLUMNS = ("timestamp_ms", "rate")
MAX_RATE = Decimal("0.1")  # 10 % a settlement is far beyond any exchange's cap: a unit mistake (percent?)
FIRST_MS, LAST_MS = 1_262_304_000_000, 32_503_680_000_000  # 2010 .. 3000: a seconds/ms mix-up is caught


def funding_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder] if NAME.match(folder.stem) else []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".csv", ".parquet"} and NAME.match(p.stem))


def symbol_of(path: Path) -> str:
    m = NAME.match(path.stem)
    if m is None:
        raise BadCandleFile(path, "file name must look like BASE-QUOTE_funding_<source>.csv "
                                  "(e.g. BTC-USDT_funding_bybit.csv)")
    return (m["base"] + m["quote"]).upper()


def read_funding_file(path: Path) -> tuple[str, list[tuple[int, Decimal]]]:
    """(symbol, [(settlement ms, rate)]) of one file; BadCandleFile naming the first bad line."""
    symbol = symbol_of(path)
    frame = load_frame(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise BadCandleFile(path, f"missing column(s) {', '.join(missing)} (header must be {','.join(COLUMNS)})", 1)
    rows: list[tuple[int, Decimal]] = []
    last = -1
    for n, (ts, rate) in enumerate(zip(frame["timestamp_ms"], frame["rate"], strict=True), start=2):
        try:
            ms = int(str(ts).strip())
            value = Decimal(str(rate).strip())
        except (ValueError, InvalidOperation):
            raise BadCandleFile(path, f"not a number: timestamp_ms={ts!r} rate={rate!r}", n) from None
        if not value.is_finite() or not math.isfinite(float(value)) or abs(value) > MAX_RATE:
            raise BadCandleFile(path, f"rate {value} is not a fraction between -{MAX_RATE} and {MAX_RATE}", n)
        if not FIRST_MS <= ms <= LAST_MS:
            raise BadCandleFile(path, f"timestamp_ms {ms} is not a time in milliseconds between 2010 and 3000", n)
        if ms <= last:
            raise BadCandleFile(path, "timestamps must be strictly increasing", n)
        last = ms
        rows.append((ms, value))
    return symbol, rows


def read_funding_dir(folder: Path, symbols: Iterable[str] | None = None) -> FundingSchedule:
    """Every funding file of a folder (recursively), optionally only some symbols; one file per symbol."""
    wanted = {s.upper() for s in symbols} if symbols else None
    schedule = FundingSchedule()
    seen: dict[str, Path] = {}
    for path in funding_files(folder):
        symbol = symbol_of(path)
        if wanted is not None and symbol not in wanted:
            continue
        if symbol in seen:
            raise BadCandleFile(path, f"{symbol} funding also comes from {seen[symbol].name}")
        seen[symbol] = path
        for ms, rate in read_funding_file(path)[1]:
            schedule.add(symbol, ms, rate)
    return schedule


def write_funding_file(symbol: str, rows: list[tuple[int, Decimal]], folder: Path, source: str = "bybit") -> Path:
    base = symbol[:-4] if symbol.endswith(("USDT", "USDC")) else symbol
    quote = symbol[len(base):] or "USDT"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{base}-{quote}_funding_{source}.csv"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("timestamp_ms,rate\n" + "".join(f"{ms},{format(rate, 'f')}\n" for ms, rate in rows))
    tmp.replace(path)  # a half-written file is never left under the real name
    return path
