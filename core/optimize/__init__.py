"""Parameter search (python -m bot optimize): the pure parts. space: what a study searches; windows: the
walk-forward windows; objectives: what a trial is worth; evaluate: one window replayed in memory."""
