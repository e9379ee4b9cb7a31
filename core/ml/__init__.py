"""The ML filter: dataset from phantom outcomes, calibrated ensemble, champion/challenger, registry."""
