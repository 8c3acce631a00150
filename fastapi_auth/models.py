"""ORM models of fastapi_auth: users and the outbox of events not yet confirmed by the broker."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi_users_db_sqlalchemy import SQLAlchemyBaseUserTable
from sqlalchemy import DateTime, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from contracts.events import utcnow
from fastapi_auth.db import Base


class User(SQLAlchemyBaseUserTable[uuid.UUID], Base):
    """fastapi-users' columns (email, hashed_password, is_active, is_superuser, is_verified)."""

    __tablename__ = "user"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    full_name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )


class OutboxEvent(Base):
    """An event written in the transaction of the change it reports, relayed to the broker later."""

    __tablename__ = "outbox"

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    routing_key: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


# fastapi-users looks e-mails up case-insensitively, so uniqueness must be too: two
# concurrent sign-ups as A@x.org and a@x.org must not both succeed.
Index("uq_user_email_lower", func.lower(User.email), unique=True)
# The relay reads pending rows due now; the purge reads old sent rows.
Index(
    "ix_outbox_pending",
    OutboxEvent.next_attempt_at,
    postgresql_where=OutboxEvent.sent_at.is_(None),
)
Index("ix_outbox_sent_at", OutboxEvent.sent_at, postgresql_where=OutboxEvent.sent_at.isnot(None))
