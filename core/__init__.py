"""The domain: market, strategies, phantom book, ML filter, risk, execution, ledger. No I/O of its own."""
