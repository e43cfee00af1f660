"""Alembic revision scripts (not imported as a package; Alembic loads them by file)."""
