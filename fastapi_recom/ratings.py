"""Writes of viewers' ratings: one order-safe, idempotent upsert per batch of events."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import (
    Boolean,
    DateTime,
    SmallInteger,
    Table,
    Uuid,
    bindparam,
    func,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, Insert, insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import RatingDeleted, RatingSubmitted
from fastapi_recom.models import Rating

# A tombstone needs a value in the NOT NULL score column; readers skip deleted rows.
TOMBSTONE_SCORE = 1


@dataclass(frozen=True, slots=True)
class RatingChange:
    """The state one event asks for: a score, or a deletion (`score` is then TOMBSTONE_SCORE)."""

    user_id: uuid.UUID
    movie_id: uuid.UUID
    score: int
    rated_at: datetime
    deleted: bool

    @classmethod
    def from_event(cls, event: RatingSubmitted | RatingDeleted) -> RatingChange:
        if isinstance(event, RatingDeleted):
            return cls(event.user_id, event.movie_id, TOMBSTONE_SCORE, event.occurred_at, True)
        return cls(event.user_id, event.movie_id, event.score, event.occurred_at, False)

    @property
    def version(self) -> tuple[datetime, bool, int]:
        # The same order as the upsert's WHERE: newest first, then a deletion beats a rating
        # of the same instant, then the higher score, so any delivery order ends the same.
        return (self.rated_at, self.deleted, self.score)


def newest_per_pair(changes: Iterable[RatingChange]) -> list[RatingChange]:
    """One change per (user, movie): ON CONFLICT may not touch a row twice in one statement."""
    newest: dict[tuple[uuid.UUID, uuid.UUID], RatingChange] = {}
    for change in changes:
        key = (change.user_id, change.movie_id)
        current = newest.get(key)
        if current is None or current.version < change.version:
            newest[key] = change
    return list(newest.values())


def _upsert_statement() -> Insert:
    # Arrays unnested server-side: five parameters whatever the batch size, and one
    # statement text, so asyncpg prepares it once per connection.
    rows = (
        func.unnest(
            bindparam("user_ids", type_=ARRAY(Uuid)),
            bindparam("movie_ids", type_=ARRAY(Uuid)),
            bindparam("scores", type_=ARRAY(SmallInteger)),
            bindparam("rated_ats", type_=ARRAY(DateTime(timezone=True))),
            bindparam("deleteds", type_=ARRAY(Boolean)),
        )
        .table_valued("user_id", "movie_id", "score", "rated_at", "deleted")
        .render_derived("incoming")
    )
    columns = ["user_id", "movie_id", "score", "rated_at", "deleted"]
    # The Core table, not the ORM entity: the session would read the arrays as ORM bulk rows.
    table = cast(Table, Rating.__table__)
    stmt = insert(table).from_select(columns, select(*(rows.c[name] for name in columns)))
    return stmt.on_conflict_do_update(
        index_elements=[table.c.user_id, table.c.movie_id],
        set_={
            "score": stmt.excluded.score,
            "rated_at": stmt.excluded.rated_at,
            "deleted": stmt.excluded.deleted,
            "updated_at": func.clock_timestamp(),
        },
        where=tuple_(table.c.rated_at, table.c.deleted, table.c.score)
        < tuple_(stmt.excluded.rated_at, stmt.excluded.deleted, stmt.excluded.score),
    )


UPSERT = _upsert_statement()


async def apply_changes(session: AsyncSession, changes: Sequence[RatingChange]) -> None:
    """Store the newest state of each pair unless a newer one is already stored; commit.

    Replaying or reordering events therefore ends in the same rows, and a deletion stays a
    tombstone that a late, older rating cannot bring back.
    """
    batch = newest_per_pair(changes)
    if not batch:
        return
    await session.execute(
        UPSERT,
        {
            "user_ids": [c.user_id for c in batch],
            "movie_ids": [c.movie_id for c in batch],
            "scores": [c.score for c in batch],
            "rated_ats": [c.rated_at for c in batch],
            "deleteds": [c.deleted for c in batch],
        },
    )
    await session.commit()
