"""catalogue

Revision ID: 20261128_02
Revises: 20261128_01
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261128_02"
down_revision: str | None = "20261128_01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "etl_state",
        sa.Column("source_table", sa.Text(), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_id", sa.Uuid(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("source_table", name=op.f("pk_etl_state")),
    )
    op.create_table(
        "genre",
        sa.Column("genre_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("source_modified_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("genre_id", name=op.f("pk_genre")),
    )
    op.create_table(
        "movie",
        sa.Column("movie_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("release_year", sa.Integer(), nullable=True),
        sa.Column("rating", sa.Float(), nullable=True),
        sa.Column("type", sa.Text(), nullable=True),
        sa.Column("source_modified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("movie_id", name=op.f("pk_movie")),
    )
    op.create_table(
        "person",
        sa.Column("person_id", sa.Uuid(), nullable=False),
        sa.Column("full_name", sa.Text(), nullable=False),
        sa.Column("source_modified_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("person_id", name=op.f("pk_person")),
    )
    op.create_table(
        "movie_genre",
        sa.Column("movie_id", sa.Uuid(), nullable=False),
        sa.Column("genre_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["genre_id"],
            ["genre.genre_id"],
            name=op.f("fk_movie_genre_genre_id_genre"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["movie_id"],
            ["movie.movie_id"],
            name=op.f("fk_movie_genre_movie_id_movie"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("movie_id", "genre_id", name=op.f("pk_movie_genre")),
    )
    op.create_index(op.f("ix_movie_genre_genre_id"), "movie_genre", ["genre_id"], unique=False)
    op.create_table(
        "movie_person",
        sa.Column("movie_id", sa.Uuid(), nullable=False),
        sa.Column("person_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["movie_id"],
            ["movie.movie_id"],
            name=op.f("fk_movie_person_movie_id_movie"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["person.person_id"],
            name=op.f("fk_movie_person_person_id_person"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("movie_id", "person_id", "role", name=op.f("pk_movie_person")),
    )
    op.create_index(op.f("ix_movie_person_person_id"), "movie_person", ["person_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_movie_person_person_id"), table_name="movie_person")
    op.drop_table("movie_person")
    op.drop_index(op.f("ix_movie_genre_genre_id"), table_name="movie_genre")
    op.drop_table("movie_genre")
    op.drop_table("person")
    op.drop_table("movie")
    op.drop_table("genre")
    op.drop_table("etl_state")
