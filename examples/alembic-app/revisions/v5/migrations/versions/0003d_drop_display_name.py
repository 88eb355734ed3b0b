"""drop users.display_name (the name column is enough)

Revision ID: 0003d
Revises: 0002
Create Date: 2025-01-27 11:15:00

Destructive: the column's data is gone once this runs; the downgrade brings the column back
empty. A deploy host should ask before running this in production, and back up first.
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0003d"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.drop_column("users", "display_name")


def downgrade() -> None:
    op.add_column("users", sa.Column("display_name", sa.String(length=255), nullable=True))
