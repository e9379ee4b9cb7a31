"""In-process fakes of the outside services (Bybit, ...) that tests point real clients at."""
