"""ORM models of fastapi_recom: ratings (the recommender's source of truth) and the catalogue."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    SmallInteger,
    Text,
    Uuid,
    false,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fastapi_recom.db import Base


class Rating(Base):
    """The newest known state of one viewer's rating of one film; deletions stay as tombstones."""

    __tablename__ = "rating"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    movie_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    score: Mapped[int] = mapped_column(SmallInteger)
    # `occurred_at` of the event that set this state (set by UGC); newer events win.
    rated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # Server time of the last write; the in-memory matrix follows changes by it.
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )

    __table_args__ = (
        CheckConstraint("score BETWEEN 1 AND 10", name="score_range"),
        Index("ix_rating_updated_at", "updated_at"),
        Index("ix_rating_movie_id", "movie_id"),
    )


class Movie(Base):
    """A film of the catalogue, copied by the ETL from the cinema's content database."""

    __tablename__ = "movie"

    movie_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    release_year: Mapped[int | None] = mapped_column(Integer)
    # The content database's own rating of the film (not viewers' scores).
    rating: Mapped[float | None] = mapped_column(Float)
    type: Mapped[str | None] = mapped_column(Text)
    source_modified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )

    genres: Mapped[list[Genre]] = relationship(
        secondary="movie_genre",
        primaryjoin="Movie.movie_id == MovieGenre.movie_id",
        secondaryjoin="MovieGenre.genre_id == Genre.genre_id",
        lazy="raise",
        order_by="Genre.name",
        viewonly=True,
    )

    __table_args__ = (
        # Catalogue search: title ILIKE '%...%' (pg_trgm); the listing's order and paging.
        Index(
            "ix_movie_title_trgm",
            "title",
            postgresql_using="gin",
            postgresql_ops={"title": "gin_trgm_ops"},
        ),
        Index("ix_movie_title_movie_id", "title", "movie_id"),
    )


class Genre(Base):
    __tablename__ = "genre"

    genre_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    source_modified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Person(Base):
    __tablename__ = "person"

    person_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    full_name: Mapped[str] = mapped_column(Text)
    source_modified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WithdrawnMovie(Base):
    """A film the catalogue had and its source deleted. The ETL keeps a film either here or in
    `movie`, never both; recom recommends none of these, though their ratings still count."""

    __tablename__ = "movie_withdrawn"

    movie_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    withdrawn_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp(), index=True
    )


# The link tables carry no foreign keys: the ETL is their only writer and keeps them whole
# (a film's links are replaced with the film in one transaction), and the per-row key checks
# doubled the time of a full load (bench/etl.py).
class MovieGenre(Base):
    __tablename__ = "movie_genre"

    movie_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    genre_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, index=True)


class MoviePerson(Base):
    __tablename__ = "movie_person"

    movie_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    person_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, index=True)
    role: Mapped[str] = mapped_column(Text, primary_key=True)


class EtlState(Base):
    """Where the ETL stopped reading one source table: its `modified` watermark and tie-breaker."""

    __tablename__ = "etl_state"

    source_table: Mapped[str] = mapped_column(Text, primary_key=True)
    watermark: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )
