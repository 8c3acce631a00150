"""Subscriber of `notifications.events`: auth's account events and recom's picks become e-mails."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import consumer_queue, consumption_metered, decode_event, with_patience
from contracts.events import (
    Event,
    PasswordResetRequested,
    RecommendationsGenerated,
    UserRegistered,
    UserVerified,
)
from notifications_service import service
from notifications_service.config import Settings

logger = logging.getLogger(__name__)

QUEUE = "notifications.events"
EVENT_TYPES: dict[str, type[Event]] = {
    model.routing_key: model
    for model in (UserRegistered, UserVerified, PasswordResetRequested, RecommendationsGenerated)
}


async def handle_event(session: AsyncSession, event: Event, settings: Settings) -> bool:
    """Apply one event; True when it queued an e-mail. Idempotent on the event's key."""
    match event:
        case UserRegistered():
            return await service.record_registration(session, event, settings)
        case UserVerified():
            await service.record_verification(session, event)
            return False
        case PasswordResetRequested():
            return await service.record_reset_request(session, event, settings)
        case RecommendationsGenerated(trigger="digest"):
            return await service.fill_digest(session, event, settings)
        case RecommendationsGenerated():
            return await service.record_recommendations(session, event, settings)
    raise AssertionError(f"no handler for {type(event).__name__}")


def register_consumers(
    broker: RabbitBroker,
    settings: Settings,
    sessionmaker: Callable[[], async_sessionmaker[AsyncSession]],
    on_queued: Callable[[], Any],
) -> None:
    """Subscribe before the broker starts; `sessionmaker` is read per message (lifespan order)."""

    # Any other exception is a failure worth retrying: nack and requeue, up to the queue's
    # delivery limit, after which RabbitMQ dead-letters it.
    @broker.subscriber(consumer_queue(QUEUE), ack_policy=AckPolicy.NACK_ON_ERROR)
    async def consume_event(message: RabbitMessage) -> None:
        with consumption_metered(QUEUE):
            event = decode_event(EVENT_TYPES, message.raw_message.routing_key or "", message.body)
            queued = await with_patience(
                lambda: _apply(sessionmaker(), event, settings),
                settings.consumer_patience_seconds,
                dependency="database",
            )
        if queued:
            on_queued()


async def _apply(
    sessionmaker: async_sessionmaker[AsyncSession], event: Event, settings: Settings
) -> bool:
    async with sessionmaker() as session:
        return await handle_event(session, event, settings)
