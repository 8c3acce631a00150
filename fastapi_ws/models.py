"""ORM models of fastapi_ws: one room per viewer, its numbered messages, processed events."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from fastapi_ws.db import Base

MESSAGE_KINDS = ("system", "recommendations", "chat")
AUTHORS = ("system", "viewer", "support")


class Room(Base):
    """A viewer's personal room; `last_seq` is the sequence of its newest message."""

    __tablename__ = "room"

    room_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    full_name: Mapped[str | None] = mapped_column(String(200))
    last_seq: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Fingerprint and time of the newest recommendations, to drop an identical repeat.
    last_push_digest: Mapped[str | None] = mapped_column(String(64))
    last_push_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Message(Base):
    """One message of a room, numbered 1, 2, 3... by `seq` within the room."""

    __tablename__ = "message"

    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("room.room_id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    author: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # The event this message came from, if any.
    event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )

    __table_args__ = (
        UniqueConstraint("room_id", "seq", name="uq_message_room_id_seq"),
        CheckConstraint("kind IN ('system', 'recommendations', 'chat')", name="kind"),
        CheckConstraint("author IN ('system', 'viewer', 'support')", name="author"),
        # The chat rate limit's look-up (`service.chat_rate_exceeded`), by migration 20261128_02.
        Index(
            "ix_message_chat_author",
            "room_id",
            "author",
            "seq",
            postgresql_where=text("kind = 'chat'"),
        ),
    )


class ProcessedEvent(Base):
    """Event ids already applied, so that a redelivered event changes nothing."""

    __tablename__ = "processed_event"

    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    routing_key: Mapped[str] = mapped_column(String(100))
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
