"""audit log, backfilled from user_events

Revision ID: 0004
Revises: 0003b
Create Date: 2025-01-22 16:40:00
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003b"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    audit = op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    op.bulk_insert(audit, [{"action": "audit.enabled", "detail": "migration 0004"}])
    # The bug this revision carries on purpose: user_events was never created on this branch,
    # so the backfill fails halfway. The transaction of 0004 rolls back (PostgreSQL DDL is
    # transactional), while 0003b, committed before it, stays applied.
    op.execute(
        "INSERT INTO audit (action, detail, at) SELECT kind, payload, created_at FROM user_events"
    )


def downgrade() -> None:
    op.drop_table("audit")
