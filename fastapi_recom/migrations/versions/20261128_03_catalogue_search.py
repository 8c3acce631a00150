"""catalogue search and load: trigram index on titles, listing index, link tables without FKs

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


LINK_KEYS = (
    ("movie_genre", "movie_id", "movie"),
    ("movie_genre", "genre_id", "genre"),
    ("movie_person", "movie_id", "movie"),
    ("movie_person", "person_id", "person"),
)


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
    # The ETL is the only writer of the links and keeps them whole; the per-row key checks
    # doubled the time of a full load.
    for table, column, referred in LINK_KEYS:
        op.drop_constraint(f"fk_{table}_{column}_{referred}", table, type_="foreignkey")


def downgrade() -> None:
    for table, column, referred in LINK_KEYS:
        op.execute(
            f"DELETE FROM {table} AS l WHERE NOT EXISTS "
            f"(SELECT 1 FROM {referred} AS r WHERE r.{column} = l.{column})"
        )
        op.create_foreign_key(
            f"fk_{table}_{column}_{referred}",
            table,
            referred,
            [column],
            [column],
            ondelete="CASCADE",
        )
    op.drop_index("ix_movie_title_movie_id", table_name="movie")
    op.drop_index("ix_movie_title_trgm", table_name="movie")
    # The extension stays: other objects of the database may use it.
