"""rating table

Revision ID: 20261128_01
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261128_01"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rating",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("movie_id", sa.Uuid(), nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=False),
        sa.Column("rated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.clock_timestamp(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("user_id", "movie_id", name=op.f("pk_rating")),
        sa.CheckConstraint("score BETWEEN 1 AND 10", name=op.f("ck_rating_score_range")),
    )
    op.create_index("ix_rating_updated_at", "rating", ["updated_at"])
    op.create_index("ix_rating_movie_id", "rating", ["movie_id"])


def downgrade() -> None:
    op.drop_index("ix_rating_movie_id", table_name="rating")
    op.drop_index("ix_rating_updated_at", table_name="rating")
    op.drop_table("rating")
