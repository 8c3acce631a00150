"""catalogue search: trigram index on movie titles, an index for the listing's order

Revision ID: 20261128_03
Revises: 20261128_02
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261128_03"
down_revision: str | None = "20261128_02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # pg_trgm is a trusted extension: the database owner may create it.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index(
        "ix_movie_title_trgm",
        "movie",
        ["title"],
        postgresql_using="gin",
        postgresql_ops={"title": "gin_trgm_ops"},
    )
    op.create_index("ix_movie_title_movie_id", "movie", ["title", "movie_id"])


def downgrade() -> None:
    op.drop_index("ix_movie_title_movie_id", table_name="movie")
    op.drop_index("ix_movie_title_trgm", table_name="movie")
    # The extension stays: other objects of the database may use it.
