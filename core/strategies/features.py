"""The features of a signal: what the ML filter learns from. Every value is computed from candles
closed at or before the signal's candle (the no-look-ahead test truncates the future and compares).

Missing values (too little history, no BTC in the universe) are 0, except the strategy win rate,
whose prior is 0.5. Distances are in ATR so symbols of any price compare. A value that is not finite (an
absurd input that got past the feeds) is 0 too: nothing here raises or hands NaN to the ML filter.
"""

from __future__ import annotations

import math

import numpy as np

from core.market.indicators import mean_std
from core.market.state import SeriesState
from core.strategies.regime import Regime

FEATURES: dict[str, str] = {
    "atr_pct": "ATR(14) / close: volatility as a fraction of price",
    "atr_percentile": "share of the last 100 ATR values below the current one",
    "adx": "ADX(14): trend strength",
    "di_spread": "+DI − −DI: signed trend direction and strength",
    "ema_fast_dist": "(close − EMA20) / ATR",
    "ema_mid_dist": "(close − EMA50) / ATR",
    "ema_slow_dist": "(close − EMA200) / ATR",
    "ema_mid_slope": "change of EMA50 over the last 10 candles / ATR",
    "ema_alignment": "+1 EMA20 > EMA50 > EMA200, −1 reversed, 0 mixed",
    "bb_position": "(close − lower band) / (upper − lower): 0 at the lower band, 1 at the upper",
    "bb_width": "(upper − lower) / middle band",
    "rsi": "RSI(14)",
    "rsi_change_3": "RSI now − RSI 3 candles ago",
    "volume_z": "volume z-score over 20 candles",
    "volume_ratio": "volume / mean volume of the last 20 candles",
    "body_ratio": "|close − open| / (high − low)",
    "upper_wick": "(high − max(open, close)) / (high − low)",
    "lower_wick": "(min(open, close) − low) / (high − low)",
    "candle_direction": "+1 bullish candle, −1 bearish, 0 doji",
    "ret_1": "close / close 1 candle ago − 1",
    "ret_4": "close / close 4 candles ago − 1",
    "ret_16": "close / close 16 candles ago − 1",
    "ret_64": "close / close 64 candles ago − 1",
    "range_position_50": "(close − lowest low) / (highest high − lowest low) over 50 candles",
    "swing_high_dist": "(last swing high − close) / ATR",
    "swing_low_dist": "(close − last swing low) / ATR",
    "btc_trend": "BTC's trend on the same interval: +1 / 0 / −1 (regime gate)",
    "btc_ret_16": "BTC's return over 16 candles",
    "btc_atr_pct": "BTC's ATR / close",
    "hour_sin": "sin of the UTC hour of the signal (24 h cycle)",
    "hour_cos": "cos of the UTC hour of the signal",
    "day_of_week": "UTC day of week, 0 = Monday",
    "reward_risk": "|take-profit − entry| / |entry − stop-loss|",
    "stop_atr": "|entry − stop-loss| / ATR",
    "side": "+1 long, −1 short",
    "regime_code": "0 range, 1 trend, 2 volatility burst, 3 undecided",
    "strategy_win_rate": "win rate of this strategy's last 200 phantom outcomes before the signal (prior 0.5)",
    "strategy_outcomes": "number of outcomes in that window",
}


def _ret(closes: np.ndarray, k: int) -> float:
    if len(closes) <= k or not closes[-1 - k] > 0:
        return 0.0
    return float(closes[-1]) / float(closes[-1 - k]) - 1.0  # Python floats: an overflow is inf, not a warning


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _mean(values: np.ndarray) -> float:
    """numpy's mean (the usual case, unchanged); past float's range in the sum, the overflow-safe one."""
    with np.errstate(over="ignore", invalid="ignore"):
        m = float(values.mean())
    return m if math.isfinite(m) else mean_std(values.tolist())[0]


def compute_features(s: SeriesState, btc: SeriesState | None, regime: Regime, *, side: str, entry: float,
                     stop: float, target: float, close_ms: int, win_rate: float, outcomes: int) -> dict[str, float]:
    ind, c = s.ind, s.last_candle
    assert c is not None
    atr = ind.atr if ind.atr > 0 else 1e-12
    closes = s.last("close", 65)
    volumes = s.last("volume", 20)
    ema_mids = s.last("ema_mid", 11)
    rsis = s.last("rsi", 4)
    highs, lows = s.last("high", 50), s.last("low", 50)
    span = c.high - c.low
    band = ind.bb_upper - ind.bb_lower
    hi50, lo50 = float(highs.max()), float(lows.min())
    hour = (close_ms // 3_600_000) % 24
    day = ((close_ms // 86_400_000) + 3) % 7  # 1970-01-01 was a Thursday
    btc_closes = btc.last("close", 17) if btc is not None else np.empty(0)
    vol_mean = _mean(volumes) if len(volumes) else 0.0
    f = {
        "atr_pct": ind.atr / c.close if c.close > 0 else 0.0,
        "atr_percentile": regime.atr_percentile,
        "adx": ind.adx,
        "di_spread": ind.plus_di - ind.minus_di,
        "ema_fast_dist": (c.close - ind.ema_fast) / atr,
        "ema_mid_dist": (c.close - ind.ema_mid) / atr,
        "ema_slow_dist": (c.close - ind.ema_slow) / atr,
        "ema_mid_slope": float(ema_mids[-1] - ema_mids[0]) / atr if len(ema_mids) == 11 else 0.0,
        "ema_alignment": 1.0 if ind.ema_fast > ind.ema_mid > ind.ema_slow else
        -1.0 if ind.ema_fast < ind.ema_mid < ind.ema_slow else 0.0,
        "bb_position": (c.close - ind.bb_lower) / band if band > 0 else 0.5,
        "bb_width": band / ind.bb_mid if ind.bb_mid > 0 else 0.0,
        "rsi": ind.rsi,
        "rsi_change_3": float(rsis[-1] - rsis[0]) if len(rsis) == 4 else 0.0,
        "volume_z": ind.vol_z,
        "volume_ratio": c.volume / vol_mean if vol_mean > 0 else 1.0,
        "body_ratio": abs(c.close - c.open) / span if span > 0 else 0.0,
        "upper_wick": (c.high - max(c.open, c.close)) / span if span > 0 else 0.0,
        "lower_wick": (min(c.open, c.close) - c.low) / span if span > 0 else 0.0,
        "candle_direction": float(np.sign(c.close - c.open)),
        "ret_1": _ret(closes, 1),
        "ret_4": _ret(closes, 4),
        "ret_16": _ret(closes, 16),
        "ret_64": _ret(closes, 64),
        "range_position_50": (c.close - lo50) / (hi50 - lo50) if hi50 > lo50 else 0.5,
        "swing_high_dist": (ind.swing_high - c.close) / atr,
        "swing_low_dist": (c.close - ind.swing_low) / atr,
        "btc_trend": float(regime.btc_trend),
        "btc_ret_16": _ret(btc_closes, 16),
        "btc_atr_pct": btc.ind.atr / btc.ind.prev_close if btc is not None and btc.ind.prev_close > 0 else 0.0,
        "hour_sin": math.sin(2 * math.pi * hour / 24),
        "hour_cos": math.cos(2 * math.pi * hour / 24),
        "day_of_week": float(day),
        "reward_risk": abs(target - entry) / abs(entry - stop),
        "stop_atr": abs(entry - stop) / atr,
        "side": 1.0 if side == "long" else -1.0,
        "regime_code": float(regime.code),
        "strategy_win_rate": win_rate if outcomes else 0.5,
        "strategy_outcomes": float(outcomes),
    }
    return {k: round(_finite(float(v)), 12) for k, v in f.items()}
