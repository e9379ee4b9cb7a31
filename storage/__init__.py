"""Persistence: SQLAlchemy models and repositories, Redis hot state, journal, file I/O."""
