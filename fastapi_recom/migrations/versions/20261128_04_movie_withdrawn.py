"""withdrawn films: those the catalogue had and its source deleted, never recommended

Revision ID: 20261128_04
Revises: 20261128_03
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261128_04"
down_revision: str | None = "20261128_03"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "movie_withdrawn",
        sa.Column("movie_id", sa.Uuid(), nullable=False),
        sa.Column(
            "withdrawn_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("movie_id", name=op.f("pk_movie_withdrawn")),
    )
    op.create_index(op.f("ix_movie_withdrawn_withdrawn_at"), "movie_withdrawn", ["withdrawn_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_movie_withdrawn_withdrawn_at"), table_name="movie_withdrawn")
    op.drop_table("movie_withdrawn")
