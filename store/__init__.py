"""Persistence: records through SQLAlchemy (+ Alembic) and readings through a time-series backend."""
