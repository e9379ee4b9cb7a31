"""Candle files in and out: CSV (`timestamp_ms,open,high,low,close,volume[,turnover]`) and Parquet.

Files are named `<BASE>-<QUOTE>_<tf>_<exchange>.<csv|parquet>` (e.g. `BTC-USDT_15m_binance.csv`);
the Bybit symbol is `<BASE><QUOTE>`. Every row is validated — parsed, in time order, and a sane candle
(core/market/sanity.py: the rule the live feed applies too) — and a bad row stops the read with the file
name, line number and reason, unless `skip_bad` is given, in which case the bad lines are returned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core.market.candle import INTERVAL_MS, BadInterval, interval_label, parse_interval
from core.market.sanity import refusal_masks
from core.market.series import FIELDS, CandleSeries

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("timestamp_ms", *FIELDS)
NAME = re.compile(r"^(?P<base>[A-Z0-9]+)-(?P<quote>[A-Z0-9]+)_(?P<tf>[0-9]+[mhdw])_(?P<exchange>[a-z0-9]+)$",
                  re.IGNORECASE)


class BadCandleFile(ValueError):
    """A file (or one of its lines) that cannot be imported; the message says where and why."""

    def __init__(self, path: Path, reason: str, line: int | None = None) -> None:
        self.path, self.reason, self.line = path, reason, line
        where = f"{path.name}:{line}" if line is not None else path.name
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int  # 1-based; the CSV header is line 1 (for Parquet: the row number + 1, same convention)
    reason: str


@dataclass(frozen=True)
class FileName:
    symbol: str
    interval: str
    exchange: str

    def render(self, suffix: str) -> str:
        base, quote = (self.symbol[:-4], self.symbol[-4:]) if self.symbol.endswith(("USDT", "USDC")) else (
            self.symbol, "")
        pair = f"{base}-{quote}" if quote else base
        return f"{pair}_{interval_label(self.interval)}_{self.exchange}{suffix}"


def parse_name(path: Path) -> FileName:
    m = NAME.match(path.stem)
    if m is None:
        raise BadCandleFile(path, "file name must look like BASE-QUOTE_<tf>_<exchange>.csv "
                                  "(e.g. BTC-USDT_15m_bybit.csv)")
    try:
        interval = parse_interval(m["tf"])
    except BadInterval as exc:
        raise BadCandleFile(path, str(exc)) from None
    return FileName((m["base"] + m["quote"]).upper(), interval, m["exchange"].lower())


def load_frame(path: Path) -> pd.DataFrame:
    """Every cell as text (the careful path: a bad cell is named with its line)."""
    import pandas as pd  # only for a file the fast path refused: a replay of good files never imports it

    if path.suffix.lower() == ".parquet":
        try:
            frame = pq.read_table(path).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            raise BadCandleFile(path, f"not a readable Parquet file ({exc})") from None
        return frame.astype({c: "string" for c in frame.columns if c in COLUMNS or c == "turnover"})
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        where = re.search(r"\bline (\d+)", str(exc))  # the tokenizer names the line it choked on, if it can
        raise BadCandleFile(path, f"not a readable CSV file ({str(exc).strip()})",
                            int(where[1]) if where else None) from None
    except pd.errors.EmptyDataError:
        raise BadCandleFile(path, "the file is empty (expected a header line)") from None


def _plain_numbers(path: Path) -> dict[str, np.ndarray] | None:
    """The usual file, every cell a number, parsed by Arrow straight to float64 columns (several times faster
    than text then to_numeric); None when anything is not (a blank line, a word, an empty cell, NaN, an
    unreadable file): the careful path then reads it as text to name the line and the reason."""
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
        else:
            with path.open("rb") as f:
                header = f.readline().decode().strip().split(",")
            table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
                                   convert_options=pacsv.ConvertOptions(
                                       column_types=dict.fromkeys(header, pa.float64())))
        columns = {name: table.column(name).cast(pa.float64()) for name in table.column_names}
    except (ValueError, TypeError, UnicodeDecodeError, pa.ArrowException, OSError):
        return None
    if any(c.null_count for c in columns.values()):
        return None
    arrays = {name: _float64s(c) for name, c in columns.items()}
    return None if any(np.isnan(a).any() for a in arrays.values()) else arrays


def _float64s(column: pa.ChunkedArray) -> np.ndarray:
    """A float64 column without nulls as a numpy view of its buffer (Arrow's own to_numpy imports pandas)."""
    array = column.combine_chunks()
    return np.frombuffer(array.buffers()[1], dtype=np.float64, count=len(array), offset=array.offset * 8)


def _careful_numbers(path: Path, reasons: dict[int, str]) -> dict[str, np.ndarray]:
    """Every column of the file as float64 (NaN where a cell is not a number), each such cell in `reasons`."""
    import pandas as pd

    frame = load_frame(path)
    out = {}
    for c in [c for c in (*COLUMNS, "turnover") if c in frame.columns]:
        number = pd.to_numeric(frame[c].str.strip(), errors="coerce")
        for i in np.flatnonzero(number.isna().to_numpy()):
            cell = str(frame[c].iat[i]).strip()
            reasons.setdefault(int(i), f"{c} is not a number: {cell[:24]!r}" if cell else f"{c} is empty")
        out[c] = number.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def read_candle_file(path: Path, *, skip_bad: bool = False,
                     now: datetime | None = None) -> tuple[CandleSeries, list[BadLine]]:
    """Read and validate one file. Raises BadCandleFile at the first bad line unless skip_bad.

    `now` (an import into the live desk's store) also refuses candles that had not closed by then; a replay
    of old files has no "now" to compare with."""
    name = parse_name(path)
    reasons: dict[int, str] = {}
    numbers = _plain_numbers(path)
    if numbers is None:
        numbers = _careful_numbers(path, reasons)
    missing = [c for c in COLUMNS if c not in numbers]
    if missing:
        raise BadCandleFile(path, f"missing column(s) {', '.join(missing)} (header must be {','.join(COLUMNS)})", 1)

    def flag(mask: np.ndarray, reason: str) -> None:
        for i in np.flatnonzero(mask):
            reasons.setdefault(int(i), reason)

    ts = numbers["timestamp_ms"]
    o, h, lo, cl, v = (numbers[c] for c in FIELDS)
    turnover = numbers.get("turnover")
    with np.errstate(invalid="ignore"):
        flag(ts != np.floor(ts), "timestamp_ms is not a whole number of milliseconds")
        flag(np.fmod(ts, INTERVAL_MS[name.interval]) != 0,
             f"timestamp_ms is not aligned to the {interval_label(name.interval)} interval")
        for reason, mask in refusal_masks(ts, name.interval, o, h, lo, cl, v, turnover, now):
            flag(mask, reason.text)
        # strictly increasing: each timestamp above every earlier one
        running = np.fmax.accumulate(np.concatenate([[-np.inf], ts[:-1]]))
        flag(ts <= running, "timestamp_ms is not after the previous line (unsorted or duplicate)")

    bad = [BadLine(i + 2, reasons[i]) for i in sorted(reasons)]
    if bad and not skip_bad:
        raise BadCandleFile(path, bad[0].reason, bad[0].line)
    keep = np.ones(len(ts), dtype=bool)
    keep[list(reasons)] = False
    series = CandleSeries(
        name.symbol, name.interval, ts[keep].astype(np.int64), o[keep], h[keep], lo[keep], cl[keep], v[keep],
        turnover=turnover[keep] if turnover is not None else None,
    )
    return series, bad


def candle_files(folder: Path) -> list[Path]:
    """The candle files of a folder (recursively), sorted for a deterministic order."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such file or directory")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".csv", ".parquet"} and NAME.match(p.stem))


def read_candle_dir(folder: Path, symbols: Iterable[str] | None = None,
                    intervals: Iterable[str] | None = None) -> list[CandleSeries]:
    """Every series in a folder, optionally only some symbols/intervals; one series per (symbol, interval)."""
    wanted_symbols = {s.upper() for s in symbols} if symbols else None
    wanted_intervals = {parse_interval(i) for i in intervals} if intervals else None
    found: dict[tuple[str, str], Path] = {}
    for path in candle_files(folder):
        name = parse_name(path)
        if (wanted_symbols and name.symbol not in wanted_symbols) or (
                wanted_intervals and name.interval not in wanted_intervals):
            continue
        if (key := (name.symbol, name.interval)) in found:
            raise BadCandleFile(path, f"{name.symbol} {name.interval} also comes from {found[key].name}")
        found[key] = path
    return [read_candle_file(found[key])[0] for key in sorted(found)]


def write_candle_file(series: CandleSeries, folder: Path, fmt: str = "csv", exchange: str = "bybit") -> Path:
    """Write a series in the import format; atomically (temp file + rename), so a crash leaves no half file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FileName(series.symbol, series.interval, exchange).render("." + fmt)
    data = {"timestamp_ms": series.open_ms, **{f: getattr(series, f) for f in FIELDS}}
    if series.turnover is not None:
        data["turnover"] = series.turnover
    tmp = path.with_suffix(path.suffix + ".tmp")
    if fmt == "parquet":
        pq.write_table(pa.table(data), tmp, compression="zstd")
    elif fmt == "csv":
        import pandas as pd

        pd.DataFrame(data).to_csv(tmp, index=False)  # shortest round-trip repr of each float
    else:
        raise ValueError(f"unknown format {fmt!r} (csv or parquet)")
    tmp.replace(path)
    return path
