"""Event models of the `cinema.events` exchange; every producer and consumer imports them from here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every event: readers ignore unknown fields, so producers may add some."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    routing_key: ClassVar[str]

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=utcnow)


class UserRegistered(Event):
    routing_key: ClassVar[str] = "auth.user.registered"

    user_id: uuid.UUID
    email: EmailStr
    full_name: str = ""
    confirm_url: str
    # Set when an account moved from this confirmed address to `email`: notifications tells
    # it, so a takeover does not go unnoticed by the owner.
    previous_email: EmailStr | None = None


class UserVerified(Event):
    routing_key: ClassVar[str] = "auth.user.verified"

    user_id: uuid.UUID
    email: EmailStr
    full_name: str = ""


class PasswordResetRequested(Event):
    routing_key: ClassVar[str] = "auth.password.reset_requested"

    user_id: uuid.UUID
    email: EmailStr
    reset_url: str


class TokensRevoked(Event):
    """One token (`jti`) or every token issued before `not_before` is revoked."""

    routing_key: ClassVar[str] = "auth.tokens.revoked"

    user_id: uuid.UUID
    jti: str | None = None
    not_before: datetime | None = None


class RatingSubmitted(Event):
    routing_key: ClassVar[str] = "ugc.rating.submitted"

    user_id: uuid.UUID
    movie_id: uuid.UUID
    score: int = Field(ge=1, le=10)


class RatingDeleted(Event):
    routing_key: ClassVar[str] = "ugc.rating.deleted"

    user_id: uuid.UUID
    movie_id: uuid.UUID


class RecommendedItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    movie_id: uuid.UUID
    title: str | None = None
    score: float
    reason: str | None = None


class RecommendationsGenerated(Event):
    routing_key: ClassVar[str] = "recom.recommendations.generated"

    user_id: uuid.UUID
    items: list[RecommendedItem]
    strategy: str
    trigger: Literal["request", "digest"]


class DigestRequested(Event):
    routing_key: ClassVar[str] = "notifications.digest.requested"

    user_ids: list[uuid.UUID]
    period: str | None = None


ALL_EVENTS: tuple[type[Event], ...] = (
    UserRegistered,
    UserVerified,
    PasswordResetRequested,
    TokensRevoked,
    RatingSubmitted,
    RatingDeleted,
    RecommendationsGenerated,
    DigestRequested,
)
