"""Subscriber of `ws.events`: rooms from verified users, pushed recommendations, revoked tokens."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from functools import partial

from fastapi import FastAPI
from faststream import AckPolicy
from faststream.rabbit import RabbitBroker, RabbitMessage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import (
    consumer_queue,
    consumption_metered,
    declare_topology,
    decode_event,
    with_patience,
)
from contracts.errors import DEPENDENCY_ERRORS
from contracts.events import (
    Event,
    RecommendationsGenerated,
    RecommendedItem,
    TokensRevoked,
    UserVerified,
)
from fastapi_ws import service
from fastapi_ws.config import Settings
from fastapi_ws.hub import Hub
from fastapi_ws.models import Message
from fastapi_ws.protocol import message_frame

logger = logging.getLogger(__name__)

QUEUE = "ws.events"
EVENT_TYPES: dict[str, type[Event]] = {
    UserVerified.routing_key: UserVerified,
    RecommendationsGenerated.routing_key: RecommendationsGenerated,
    TokensRevoked.routing_key: TokensRevoked,
}

# Shown on a card when the recommender sent no reason of its own.
DEFAULT_REASONS = {
    "popular": "Popular and well rated across the cinema",
}
DEFAULT_REASON = "Viewers whose ratings resemble yours loved it"


def recommendation_items(event: RecommendationsGenerated) -> list[dict[str, object]]:
    return [
        {
            "movie_id": str(item.movie_id),
            "title": item.title,
            "score": round(item.score, 3),
            "reason": item.reason or DEFAULT_REASONS.get(event.strategy, DEFAULT_REASON),
        }
        for item in event.items
    ]


def recommendation_text(items: list[RecommendedItem], trigger: str) -> str:
    if not items:
        return "No new picks for now: rate a few more films and we will find some."
    what = "Your digest picks" if trigger == "digest" else "New picks for you"
    return f"{what}: {len(items)} film{'s' if len(items) != 1 else ''}."


async def apply_user_verified(session: AsyncSession, event: UserVerified) -> list[Message]:
    _, created = await service.lock_room(
        session, event.user_id, email=str(event.email), full_name=event.full_name or None
    )
    return created


async def apply_recommendations(
    session: AsyncSession, event: RecommendationsGenerated, settings: Settings
) -> list[Message]:
    room, created = await service.lock_room(session, event.user_id)
    items = recommendation_items(event)
    window = timedelta(seconds=settings.chat_dedup_window)
    if service.repeats_last_push(room, service.items_digest(items), window):
        logger.info("recommendations for %s repeat the previous push: not sent", event.user_id)
        return created
    message = await service.append_message(
        session,
        room,
        kind="recommendations",
        author="system",
        body=recommendation_text(event.items, event.trigger),
        items=items,
        event_id=event.event_id,
    )
    return [*created, message]


async def apply_event(
    sessionmaker: async_sessionmaker[AsyncSession],
    event: UserVerified | RecommendationsGenerated,
    settings: Settings,
) -> list[Message]:
    """Store what the event brings, once: the messages to push, or none for a redelivery."""
    async with sessionmaker() as session, session.begin():
        if not await service.record_event(session, event.event_id, event.routing_key):
            logger.info("event %s already applied", event.event_id)
            return []
        if isinstance(event, UserVerified):
            return await apply_user_verified(session, event)
        return await apply_recommendations(session, event, settings)


async def push_messages(hub: Hub, room_user_id: uuid.UUID, messages: list[Message]) -> None:
    for message in messages:
        await hub.push(room_user_id, message.seq, message_frame(message))


async def handle_event(
    event: Event, sessionmaker: async_sessionmaker[AsyncSession], hub: Hub, settings: Settings
) -> None:
    """Apply one event, waiting out a database outage (Redis's, for a revocation) with the
    message unacked."""
    patience = settings.consumer_patience_seconds
    if isinstance(event, TokensRevoked):
        not_before = event.not_before.timestamp() if event.not_before else None
        revoke = partial(hub.revoke, event.user_id, jti=event.jti, not_before=not_before)
        await with_patience(revoke, patience, dependency="Redis")
        return
    assert isinstance(event, UserVerified | RecommendationsGenerated)
    stored = await with_patience(
        partial(apply_event, sessionmaker, event, settings), patience, dependency="database"
    )
    # Pushed only once committed: a socket never sees a message the database could lose. Not
    # retried: stored already, it reaches open sockets when the fan-out comes back (each one
    # catches up from the database then), while waiting here would hold up the next events.
    try:
        await push_messages(hub, event.user_id, stored)
    except DEPENDENCY_ERRORS as exc:
        logger.warning("push of %s's messages failed: %r", event.user_id, exc)


def register_consumers(broker: RabbitBroker, app: FastAPI, settings: Settings) -> None:
    """Subscribe to `ws.events`; an event still failing once the consumer's patience is spent
    is requeued until the queue's delivery limit."""

    @broker.subscriber(consumer_queue(QUEUE), ack_policy=AckPolicy.NACK_ON_ERROR)
    async def consume_ws_event(message: RabbitMessage) -> None:
        with consumption_metered(QUEUE):
            event = decode_event(EVENT_TYPES, message.raw_message.routing_key or "", message.body)
            await handle_event(event, app.state.sessionmaker, app.state.hub, settings)


async def declare_ws_topology(broker: RabbitBroker) -> None:
    await declare_topology(broker, QUEUE, EVENT_TYPES)
