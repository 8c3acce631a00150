"""Rooms and messages: lookups, creation with a welcome, and appends with a per-room sequence."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    DateTime,
    String,
    Text,
    Uuid,
    bindparam,
    literal,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from fastapi_ws.models import Message, ProcessedEvent, Room

# A resume never sends more than this many messages at once; older ones stay in the database.
MAX_RESUME = 1000


def welcome_text(full_name: str | None) -> str:
    greeting = f"Welcome, {full_name}!" if full_name else "Welcome!"
    return (
        f"{greeting} This is your personal room: film picks made for you arrive here, "
        "and you can write to our support team."
    )


async def record_event(session: AsyncSession, event_id: uuid.UUID, routing_key: str) -> bool:
    """True the first time an event is seen; False for a redelivery (then change nothing)."""
    inserted = await session.scalar(
        insert(ProcessedEvent)
        .values(event_id=event_id, routing_key=routing_key)
        .on_conflict_do_nothing(index_elements=[ProcessedEvent.event_id])
        .returning(ProcessedEvent.event_id)
    )
    return inserted is not None


async def get_room(session: AsyncSession, user_id: uuid.UUID) -> Room | None:
    return await session.scalar(select(Room).where(Room.user_id == user_id))


async def lock_room(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    email: str | None = None,
    full_name: str | None = None,
) -> tuple[Room, list[Message]]:
    """The user's room locked for this transaction, created with a welcome message if absent.

    Returns the room and the messages created with it (the welcome), to be pushed after commit.
    """
    # The row lock serialises every writer of this room, so sequence numbers never collide.
    locked = select(Room).where(Room.user_id == user_id).with_for_update()
    room = await session.scalar(locked.execution_options(populate_existing=True))
    created_id = None
    if room is None:
        created_id = await session.scalar(
            insert(Room)
            .values(user_id=user_id, email=email, full_name=full_name)
            .on_conflict_do_nothing(index_elements=[Room.user_id])
            .returning(Room.room_id)
        )
        room = await session.scalar(locked.execution_options(populate_existing=True))
    assert room is not None
    if created_id is None:
        if (email and room.email != email) or (full_name and room.full_name != full_name):
            room.email = email or room.email
            room.full_name = full_name or room.full_name
        return room, []
    welcome = await append_message(
        session, room, kind="system", author="system", body=welcome_text(full_name)
    )
    return room, [welcome]


# Takes the room's next sequence number and stores the message with it in one round trip; a
# recommendations message also records its fingerprint for the repeat check.
NEXT_MESSAGE = text(
    """
    WITH next_seq AS (
        UPDATE room
        SET last_seq = last_seq + 1,
            updated_at = :now,
            last_push_digest = COALESCE(:digest, last_push_digest),
            last_push_at = CASE WHEN :digest IS NULL THEN last_push_at ELSE :now END
        WHERE room_id = :room_id
        RETURNING last_seq
    )
    INSERT INTO message (room_id, seq, kind, author, body, items, event_id, created_at)
    SELECT :room_id, last_seq, :kind, :author, :body, :items, :event_id, :now FROM next_seq
    RETURNING seq
    """
).bindparams(
    bindparam("room_id", type_=BigInteger),
    bindparam("now", type_=DateTime(timezone=True)),
    bindparam("digest", type_=String),
    bindparam("kind", type_=String),
    bindparam("author", type_=String),
    bindparam("body", type_=Text),
    bindparam("items", type_=JSONB),
    bindparam("event_id", type_=Uuid),
)


def items_digest(items: list[dict[str, Any]]) -> str:
    return hashlib.sha256(orjson.dumps(items, option=orjson.OPT_SORT_KEYS)).hexdigest()


def repeats_last_push(room: Room, digest: str, window: timedelta) -> bool:
    """True if the room's newest recommendations, sent within `window`, were these same items."""
    return (
        room.last_push_digest == digest
        and room.last_push_at is not None
        and room.last_push_at >= datetime.now(UTC) - window
    )


async def append_message(
    session: AsyncSession,
    room: Room,
    *,
    kind: str,
    author: str,
    body: str,
    items: list[dict[str, Any]] | None = None,
    event_id: uuid.UUID | None = None,
) -> Message:
    """Store the next message of a room (the caller holds the room's lock or accepts waiting for it).

    One statement takes the next sequence number and inserts the message with it.
    """
    now = datetime.now(UTC)
    items = items or []
    digest = items_digest(items) if kind == "recommendations" else None
    seq = await session.scalar(
        NEXT_MESSAGE,
        {
            "room_id": room.room_id,
            "now": now,
            "digest": digest,
            "kind": kind,
            "author": author,
            "body": body,
            "items": items,
            "event_id": event_id,
        },
    )
    assert seq is not None
    # The database already holds it: no second UPDATE at flush.
    set_committed_value(room, "last_seq", seq)
    # Not added to the session: the row is written, this is its value for the push.
    return Message(
        room_id=room.room_id,
        seq=seq,
        kind=kind,
        author=author,
        body=body,
        items=items,
        event_id=event_id,
        created_at=now,
    )


async def chat_rate_exceeded(
    session: AsyncSession, room_id: int, *, author: str, burst: int, window: float
) -> bool:
    """True if `author` already posted `burst` chat messages in the room within `window` seconds.

    Looks at the author's `burst`-th newest chat message (index `ix_message_chat_author`).
    """
    oldest_counted = await session.scalar(
        select(Message.created_at)
        # A literal, so that even a generic prepared plan matches the partial index.
        .where(Message.room_id == room_id, Message.kind == literal_column("'chat'"))
        .where(Message.author == author)
        .order_by(Message.seq.desc())
        .offset(burst - 1)
        .limit(1)
    )
    return oldest_counted is not None and oldest_counted > datetime.now(UTC) - timedelta(
        seconds=window
    )


async def history(
    session: AsyncSession, room_id: int, *, after_seq: int | None, limit: int
) -> Sequence[Message]:
    """Everything after `after_seq` in order (resume), else the newest `limit` messages in order."""
    query = select(Message).where(Message.room_id == room_id)
    if after_seq is not None:
        rows = await session.scalars(
            query.where(Message.seq > after_seq).order_by(Message.seq).limit(MAX_RESUME)
        )
        return rows.all()
    rows = await session.scalars(query.order_by(Message.seq.desc()).limit(limit))
    return list(reversed(rows.all()))


async def messages_between(
    session: AsyncSession, room_id: int, *, after_seq: int, before_seq: int | None
) -> Sequence[Message]:
    query = select(Message).where(Message.room_id == room_id, Message.seq > after_seq)
    if before_seq is not None:
        query = query.where(Message.seq < before_seq)
    return (await session.scalars(query.order_by(Message.seq).limit(MAX_RESUME))).all()


async def list_rooms(
    session: AsyncSession, *, limit: int, offset: int, before: tuple[datetime, int] | None = None
) -> Sequence[Room]:
    """Rooms by `(updated_at, room_id)` descending, those strictly below `before` if given.

    A keyset page never repeats a room or skips one that kept its place; `offset` repeats
    while messages move rooms to the top, and stays only for old clients.
    """
    query = select(Room)
    if before is not None:
        updated_at, room_id = before
        query = query.where(
            tuple_(Room.updated_at, Room.room_id)
            < tuple_(literal(updated_at, DateTime(timezone=True)), literal(room_id, BigInteger))
        )
    rows = await session.scalars(
        query.order_by(Room.updated_at.desc(), Room.room_id.desc()).limit(limit).offset(offset)
    )
    return rows.all()
