"""Incremental indicators: O(1) work per closed candle, plain floats (this is the replay hot path).

Definitions (the vectorized twin in core/market/vectorized.py computes the same numbers with pandas):
- EMA(n): alpha = 2/(n+1), seeded with the first close (pandas `ewm(span=n, adjust=False)`).
- ATR(n): Wilder's moving average (alpha = 1/n, seeded with the first value) of the true range; the first
  true range is high - low.
- RSI(n): Wilder's averages of gains and losses of close-to-close changes, from the second candle on;
  100 when there were no losses, NaN before the first change.
- Bollinger(n, k): mean ± k population standard deviations of the last n closes (NaN until n candles).
- ADX(n): +DM/-DM and true range smoothed with Wilder's average, DX = 100·|+DI − −DI| / (+DI + −DI),
  ADX = Wilder's average of DX, all from the second candle on.
- Volume z-score(n): (volume − mean) / population std of the last n volumes including this one
  (0 when the std is 0, NaN until n candles).
- Swings: a swing high is a high strictly above the `swing` highs on each side; it is known only
  `swing` candles later (no look-ahead). The latest confirmed swing high/low are kept.

Feeds refuse absurd candles (core/market/sanity.py), but the arithmetic does not rely on it: any finite input
gives finite or NaN values, never an exception (no float `**`, which raises OverflowError where `*` gives inf;
squares are summed in units of a power of two when plain sums would overflow; ratios divide before scaling).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

NAN = math.nan


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation of a small window, for any finite values.

    The plain sums first (the numbers this code always gave: the squares are added in the same order, in a loop
    that builds no list); only when they overflow (values beyond ~1e154) again in units of 2**e, a power-of-two
    scale that loses no precision, so nothing overflows."""
    n = len(xs)
    mean = sum(xs) / n
    var = 0.0
    for x in xs:
        d = x - mean
        var += d * d
    var /= n
    if math.isfinite(var):
        return mean, math.sqrt(var)
    e = math.frexp(max(abs(x) for x in xs))[1]
    scaled = [math.ldexp(x, -e) for x in xs]  # all within [-1, 1]
    m = sum(scaled) / n
    std = math.sqrt(sum((x - m) * (x - m) for x in scaled) / n)
    return math.ldexp(m, e), math.ldexp(std, e)  # std <= max |x|: finite (inf only for inf/NaN input)


@dataclass(frozen=True)
class IndicatorConfig:
    ema_fast: int = 20
    ema_mid: int = 50
    ema_slow: int = 200
    atr: int = 14
    rsi: int = 14
    bb: int = 20
    bb_k: float = 2.0
    adx: int = 14
    vol_z: int = 20
    swing: int = 2

    def __post_init__(self) -> None:
        if min(self.ema_fast, self.ema_mid, self.ema_slow, self.atr, self.rsi, self.bb, self.adx, self.vol_z,
               self.swing) < 1:
            raise ValueError(f"indicator windows must be at least 1: {self}")


class Indicators:
    """The indicator state of one (symbol, interval); `update` once per closed candle, in order."""

    __slots__ = (
        "_a_adx", "_a_atr", "_a_fast", "_a_mid", "_a_rsi", "_a_slow", "_adx_seeded", "_bb", "_bb_n", "_closes",
        "_highs", "_lows", "_swing_ms", "_vols", "_vz", "_vz_n", "adx", "atr", "avg_gain", "avg_loss", "cfg",
        "ema_fast", "ema_mid", "ema_slow", "minus_di", "n", "plus_di", "prev_close", "prev_high", "prev_low", "rsi",
        "sm_minus", "sm_plus", "sm_tr", "swing_high", "swing_high_ms", "swing_low", "swing_low_ms",
    )

    def __init__(self, cfg: IndicatorConfig = IndicatorConfig()) -> None:
        self.cfg = cfg
        self._a_fast, self._a_mid, self._a_slow = 2 / (cfg.ema_fast + 1), 2 / (cfg.ema_mid + 1), 2 / (cfg.ema_slow + 1)
        self._a_atr, self._a_rsi, self._a_adx = 1 / cfg.atr, 1 / cfg.rsi, 1 / cfg.adx
        self.n = 0
        self.ema_fast = self.ema_mid = self.ema_slow = self.atr = NAN
        self.rsi = self.avg_gain = self.avg_loss = NAN
        self._bb: tuple[float, float, float, float] = (NAN, NAN, NAN, NAN)  # mid, std, upper, lower
        self._bb_n = self._vz_n = 0  # `n` when they were last computed
        self.adx = self.plus_di = self.minus_di = NAN
        self.sm_plus = self.sm_minus = self.sm_tr = NAN
        self._adx_seeded = False
        self._vz = NAN
        self.prev_close = self.prev_high = self.prev_low = NAN
        self.swing_high = self.swing_low = NAN
        self.swing_high_ms = self.swing_low_ms = -1
        self._closes: deque[float] = deque(maxlen=cfg.bb)
        self._vols: deque[float] = deque(maxlen=cfg.vol_z)
        w = 2 * cfg.swing + 1
        self._highs: deque[float] = deque(maxlen=w)
        self._lows: deque[float] = deque(maxlen=w)
        self._swing_ms: deque[int] = deque(maxlen=w)

    def update(self, open_ms: int, high: float, low: float, close: float, volume: float) -> None:
        n = self.n
        if n == 0:
            self.ema_fast = self.ema_mid = self.ema_slow = close
            self.atr = high - low
        else:
            pc = self.prev_close
            self.ema_fast += self._a_fast * (close - self.ema_fast)
            self.ema_mid += self._a_mid * (close - self.ema_mid)
            self.ema_slow += self._a_slow * (close - self.ema_slow)
            tr = max(high - low, abs(high - pc), abs(low - pc))
            self.atr += self._a_atr * (tr - self.atr)
            # RSI
            change = close - pc
            gain, loss = (change, 0.0) if change > 0 else (0.0, -change)
            if n == 1:
                self.avg_gain, self.avg_loss = gain, loss
            else:
                a = self._a_rsi
                self.avg_gain += a * (gain - self.avg_gain)
                self.avg_loss += a * (loss - self.avg_loss)
            self.rsi = 100.0 if self.avg_loss == 0 else 100.0 - 100.0 / (1.0 + self.avg_gain / self.avg_loss)
            # ADX
            up, down = high - self.prev_high, self.prev_low - low
            pdm = up if up > down and up > 0 else 0.0
            mdm = down if down > up and down > 0 else 0.0
            if n == 1:
                self.sm_plus, self.sm_minus, self.sm_tr = pdm, mdm, tr
            else:
                a = self._a_adx
                self.sm_plus += a * (pdm - self.sm_plus)
                self.sm_minus += a * (mdm - self.sm_minus)
                self.sm_tr += a * (tr - self.sm_tr)
            if self.sm_tr > 0:  # divide first: 100 * sm would overflow before the ratio brings it down
                self.plus_di = 100.0 * (self.sm_plus / self.sm_tr)
                self.minus_di = 100.0 * (self.sm_minus / self.sm_tr)
                total = self.plus_di + self.minus_di
                dx = 100.0 * abs(self.plus_di - self.minus_di) / total if total > 0 else 0.0
            else:
                self.plus_di = self.minus_di = dx = 0.0
            if self._adx_seeded:
                self.adx += self._a_adx * (dx - self.adx)
            else:
                self.adx, self._adx_seeded = dx, True
        # Bollinger and volume z-score: their windows here, the values computed when read (most candles never
        # read them: see the properties below)
        self._closes.append(close)
        self._vols.append(volume)
        # swings: the middle of the last 2k+1 candles
        highs, lows, times = self._highs, self._lows, self._swing_ms
        highs.append(high)
        lows.append(low)
        times.append(open_ms)
        if len(highs) == highs.maxlen:
            k = self.cfg.swing
            hs, ls = tuple(highs), tuple(lows)
            if hs[k] > max(hs[:k]) and hs[k] > max(hs[k + 1:]):
                self.swing_high, self.swing_high_ms = hs[k], times[k]
            if ls[k] < min(ls[:k]) and ls[k] < min(ls[k + 1:]):
                self.swing_low, self.swing_low_ms = ls[k], times[k]
        self.prev_close, self.prev_high, self.prev_low = close, high, low
        self.n = n + 1

    # Bollinger(n, k) and the volume z-score of the windows held now: the same numbers as computing them at every
    # update (the windows only change there), computed once per candle and only for the candles that read them.
    def _bollinger(self) -> tuple[float, float, float, float]:
        if self._bb_n != self.n:
            closes = self._closes
            if len(closes) == closes.maxlen:  # NaN until the window is full
                mean, std = mean_std(closes)
                k = self.cfg.bb_k
                self._bb = (mean, std, mean + k * std, mean - k * std)
            self._bb_n = self.n
        return self._bb

    @property
    def bb_mid(self) -> float:
        return self._bollinger()[0]

    @property
    def bb_std(self) -> float:
        return self._bollinger()[1]

    @property
    def bb_upper(self) -> float:
        return self._bollinger()[2]

    @property
    def bb_lower(self) -> float:
        return self._bollinger()[3]

    @property
    def vol_z(self) -> float:
        if self._vz_n != self.n:
            vols = self._vols
            if len(vols) == vols.maxlen:  # NaN until the window is full
                vmean, vstd = mean_std(vols)
                self._vz = (vols[-1] - vmean) / vstd if vstd > 0 else 0.0
            self._vz_n = self.n
        return self._vz

    def snapshot(self) -> dict[str, float]:
        """The current values by name (reports, /analysis, tests)."""
        names = ("ema_fast", "ema_mid", "ema_slow", "atr", "rsi", "bb_mid", "bb_upper", "bb_lower", "adx",
                 "plus_di", "minus_di", "vol_z", "swing_high", "swing_low")
        return {name: getattr(self, name) for name in names}
