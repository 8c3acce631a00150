"""ORM models of notifications_service: the e-mail directory and the delivery log."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from notifications_service.db import Base


class DigestFrequency(StrEnum):
    OFF = "off"
    IMMEDIATE = "immediate"
    DAILY = "daily"
    WEEKLY = "weekly"


class DeliveryKind(StrEnum):
    CONFIRMATION = "confirmation"
    PASSWORD_RESET = "password_reset"
    RECOMMENDATIONS = "recommendations"
    DIGEST = "digest"
    # The notice to a confirmed address that the account moved to another one.
    EMAIL_CHANGED = "email_changed"


class DeliveryStatus(StrEnum):
    # A digest requested from recom whose picks have not arrived yet.
    AWAITING = "awaiting"
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    # Decided not to send (preference, throttle, no picks); kept so a redelivery is a no-op.
    SKIPPED = "skipped"


def _in(column: str, enum: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in enum)})"


class Recipient(Base):
    """A viewer as the e-mail side knows them, filled from auth's events."""

    __tablename__ = "recipient"
    __table_args__ = (
        CheckConstraint(_in("digest_frequency", DigestFrequency), name="digest_frequency"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    full_name: Mapped[str] = mapped_column(String(255), default="", server_default="")
    is_verified: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    digest_frequency: Mapped[str] = mapped_column(
        String(16), default=DigestFrequency.DAILY, server_default=DigestFrequency.DAILY.value
    )
    unsubscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the last `immediate` recommendations e-mail was queued (the hourly throttle).
    last_immediate_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Delivery(Base):
    """One e-mail: its idempotency key, its content and where it is in pending → sent/failed."""

    __tablename__ = "delivery"
    __table_args__ = (
        CheckConstraint(_in("kind", DeliveryKind), name="kind"),
        CheckConstraint(_in("status", DeliveryStatus), name="status"),
        Index(
            "ix_delivery_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "ix_delivery_awaiting",
            "user_id",
            postgresql_where=text("status = 'awaiting'"),
        ),
        Index("ix_delivery_user_id_created_at", "user_id", "created_at"),
    )

    delivery_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # `<kind>:<event_id>` for event-driven e-mails, `digest:<user_id>:<period>` for digests.
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[uuid.UUID | None]
    user_id: Mapped[uuid.UUID | None]
    period: Mapped[str | None] = mapped_column(String(16))
    to_address: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    unsubscribe_url: Mapped[str | None] = mapped_column(Text)
    # SMTP attempts so far, and for digests how often the picks were requested from recom.
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    requests: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    # The moment of the insert, not of the transaction's start (`now()`): a transaction that
    # waited for the recipient's row lock decides after the one holding it, and the history
    # lists e-mails newest first in that order.
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )
    requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
