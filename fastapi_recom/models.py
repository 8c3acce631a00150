"""ORM models of fastapi_recom: ratings (source of truth for the recommender)."""

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, Index, SmallInteger, Uuid, false, func
from sqlalchemy.orm import Mapped, mapped_column

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
