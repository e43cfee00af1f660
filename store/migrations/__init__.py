"""Alembic migrations of the records database, run by store.db.migrate."""
