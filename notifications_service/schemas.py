"""HTTP bodies of notifications_service."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from notifications_service.models import DeliveryKind, DeliveryStatus, DigestFrequency


class PreferencesRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: uuid.UUID
    email: str
    is_verified: bool
    digest_frequency: DigestFrequency
    subscribed: bool


class PreferencesUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    digest_frequency: DigestFrequency | None = None
    # False is the same opt-out as the unsubscribe link; True opts back in.
    subscribed: bool | None = None


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: DeliveryKind
    status: DeliveryStatus
    subject: str | None
    period: str | None
    attempts: int
    created_at: datetime
    sent_at: datetime | None


class HistoryRead(BaseModel):
    items: list[DeliveryRead]


class UnsubscribeRead(BaseModel):
    user_id: uuid.UUID
    subscribed: bool = False


class DigestRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Ignore the configured hour and weekday: digests of the current periods go out now.
    force: bool = True


class DigestRunRead(BaseModel):
    requested: int = Field(description="Viewers whose picks were requested from recom")
