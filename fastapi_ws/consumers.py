"""Subscriber of `ws.events`: rooms from verified users, pushed recommendations, revoked tokens."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import FastAPI
from faststream import AckPolicy
from faststream.rabbit import RabbitBroker, RabbitMessage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import consumer_queue, consumption_metered, declare_topology, decode_event
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


async def handle_event(
    event: Event, sessionmaker: async_sessionmaker[AsyncSession], hub: Hub, settings: Settings
) -> None:
    if isinstance(event, TokensRevoked):
        not_before = event.not_before.timestamp() if event.not_before else None
        await hub.revoke(event.user_id, jti=event.jti, not_before=not_before)
        return
    async with sessionmaker() as session, session.begin():
        if not await service.record_event(session, event.event_id, event.routing_key):
            logger.info("event %s already applied", event.event_id)
            return
        if isinstance(event, UserVerified):
            stored = await apply_user_verified(session, event)
        else:
            assert isinstance(event, RecommendationsGenerated)
            stored = await apply_recommendations(session, event, settings)
        room_user_id = event.user_id
    # Pushed only once committed: a socket never sees a message the database could lose.
    for message in stored:
        try:
            await hub.push(room_user_id, message.seq, message_frame(message))
        except Exception as exc:
            # Stored already; open sockets fetch it when the fan-out comes back.
            logger.warning("push of %s/%s failed: %r", room_user_id, message.seq, exc)


def register_consumers(broker: RabbitBroker, app: FastAPI, settings: Settings) -> None:
    """Subscribe to `ws.events`; a failing event is requeued until the queue's delivery limit."""

    @broker.subscriber(consumer_queue(QUEUE), ack_policy=AckPolicy.NACK_ON_ERROR)
    async def consume_ws_event(message: RabbitMessage) -> None:
        with consumption_metered(QUEUE):
            event = decode_event(EVENT_TYPES, message.raw_message.routing_key or "", message.body)
            await handle_event(event, app.state.sessionmaker, app.state.hub, settings)


async def declare_ws_topology(broker: RabbitBroker) -> None:
    await declare_topology(broker, QUEUE, EVENT_TYPES)
