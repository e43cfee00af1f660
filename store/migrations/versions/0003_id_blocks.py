"""id_blocks: alert ids reserved in blocks by the process that opens alerts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create id_blocks, its next alert id after the highest one stored."""
    op.create_table(
        "id_blocks",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("next_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_id_blocks"),
    )
    op.execute("INSERT INTO id_blocks (name, next_id) SELECT 'alerts', COALESCE(MAX(id), 0) + 1 FROM alerts")


def downgrade() -> None:
    """Drop id_blocks; on PostgreSQL the column's own sequence takes over past the highest id."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "SELECT setval(pg_get_serial_sequence('alerts', 'id'), COALESCE((SELECT MAX(id) FROM alerts), 0) + 1, false)"
        )
    op.drop_table("id_blocks")
