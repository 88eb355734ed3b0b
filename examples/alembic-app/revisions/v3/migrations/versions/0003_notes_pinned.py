"""notes.pinned

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-20 14:05:00
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Nullable and without a default, so the ALTER is a catalog-only change on a big table.
    op.add_column("notes", sa.Column("pinned", sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column("notes", "pinned")
