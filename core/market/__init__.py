"""Market data: candles, feeds (Bybit, replay, synthetic), MarketState and indicators."""
