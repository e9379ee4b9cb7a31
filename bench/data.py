"""Where the shared real candles are: $PD_CANDLES, else ../shared/data/candles beside the checkout, else
the workplace's /work/shared (a checkout made elsewhere, e.g. by CI, still finds them). Read, never copied."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def candles_dir() -> Path:
    candidates = [Path(p) for p in (os.environ.get("PD_CANDLES"),) if p]
    candidates += [ROOT.parent / "shared" / "data" / "candles", Path("/work/shared/data/candles")]
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError("the shared candles are not found: set PD_CANDLES to their folder "
                            f"(looked in {', '.join(str(p) for p in candidates)})")


CANDLES = candles_dir()
BINANCE = CANDLES / "binance_spot_2020-12_2021-07"
