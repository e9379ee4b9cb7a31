"""The vectorized twin of core/market/indicators.py: whole-series pandas/numpy versions of the same
definitions. Used to prove the incremental code right (tests) and as the seed systems' pattern of
recomputing everything at every candle (the replay benchmark's baseline) — never on the hot path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from core.market.indicators import IndicatorConfig


def _wilder(values: pd.Series, n: int) -> pd.Series:
    return values.ewm(alpha=1 / n, adjust=False).mean()


def _rolling_mean_std(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    mean, std = np.full(len(x), np.nan), np.full(len(x), np.nan)
    if len(x) >= n:
        w = sliding_window_view(x, n)
        m = w.sum(axis=1) / n
        mean[n - 1:] = m
        std[n - 1:] = np.sqrt(((w - m[:, None]) ** 2).sum(axis=1) / n)
    return mean, std


def indicators_frame(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray,
                     cfg: IndicatorConfig = IndicatorConfig()) -> pd.DataFrame:
    c, h, lo = pd.Series(close), pd.Series(high), pd.Series(low)
    out = pd.DataFrame(index=c.index)
    out["ema_fast"] = c.ewm(span=cfg.ema_fast, adjust=False).mean()
    out["ema_mid"] = c.ewm(span=cfg.ema_mid, adjust=False).mean()
    out["ema_slow"] = c.ewm(span=cfg.ema_slow, adjust=False).mean()
    pc = c.shift(1)
    tr = pd.concat([h - lo, (h - pc).abs(), (lo - pc).abs()], axis=1).max(axis=1)
    tr.iloc[0] = h.iloc[0] - lo.iloc[0]
    out["atr"] = _wilder(tr, cfg.atr)

    change = c.diff()
    gain, loss = change.clip(lower=0), (-change).clip(lower=0)
    avg_gain = _wilder(gain.iloc[1:], cfg.rsi).reindex(c.index)
    avg_loss = _wilder(loss.iloc[1:], cfg.rsi).reindex(c.index)
    rsi = 100 - 100 / (1 + avg_gain / avg_loss)
    out["rsi"] = rsi.where(avg_loss != 0, 100.0).where(avg_loss.notna())

    up, down = h.diff(), -lo.diff()
    pdm = up.where((up > down) & (up > 0), 0.0)
    mdm = down.where((down > up) & (down > 0), 0.0)
    sm_plus, sm_minus, sm_tr = (_wilder(s.iloc[1:], cfg.adx) for s in (pdm, mdm, tr))
    plus_di = (100 * sm_plus / sm_tr).where(sm_tr > 0, 0.0)
    minus_di = (100 * sm_minus / sm_tr).where(sm_tr > 0, 0.0)
    total = plus_di + minus_di
    dx = (100 * (plus_di - minus_di).abs() / total).where(total > 0, 0.0)
    out["plus_di"], out["minus_di"] = plus_di.reindex(c.index), minus_di.reindex(c.index)
    out["adx"] = _wilder(dx, cfg.adx).reindex(c.index)

    mean, std = _rolling_mean_std(close, cfg.bb)
    out["bb_mid"], out["bb_upper"], out["bb_lower"] = mean, mean + cfg.bb_k * std, mean - cfg.bb_k * std
    vmean, vstd = _rolling_mean_std(volume, cfg.vol_z)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["vol_z"] = np.where(vstd > 0, (volume - vmean) / vstd, np.where(np.isnan(vstd), np.nan, 0.0))

    k = cfg.swing
    out["swing_high"] = _swings(high, k, np.greater)
    out["swing_low"] = _swings(low, k, np.less)
    return out


def _swings(x: np.ndarray, k: int, better: np.ufunc) -> np.ndarray:
    """Latest confirmed swing value known at each candle (confirmed k candles after the swing)."""
    found = np.full(len(x), np.nan)
    if len(x) >= 2 * k + 1:
        w = sliding_window_view(x, 2 * k + 1)
        mid = w[:, k]
        others = np.delete(w, k, axis=1)
        is_swing = better(mid[:, None], others).all(axis=1)
        found[2 * k:] = np.where(is_swing, mid, np.nan)
    return pd.Series(found).ffill().to_numpy()
