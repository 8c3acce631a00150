"""Accepting a rating event: Idempotency-Key replay, then a confirmed publish."""

from dataclasses import dataclass

from faststream.rabbit import RabbitBroker
from redis.asyncio import Redis

from contracts.events import RatingDeleted, RatingSubmitted
from contracts.tokens import NotVerified, TokenClaims, confirmed_since_issued
from fastapi_ugc.clock import RatingClock
from fastapi_ugc.config import Settings
from fastapi_ugc.errors import IdempotencyKeyReused
from fastapi_ugc.events import RatingEvent, publish_rating_event

IDEMPOTENCY_KEY = "ugc:idempotency:{user_id}:{key}"

EVENT_TYPES: dict[str, type[RatingSubmitted] | type[RatingDeleted]] = {
    RatingSubmitted.routing_key: RatingSubmitted,
    RatingDeleted.routing_key: RatingDeleted,
}


async def recall_or_remember(redis: Redis, event: RatingEvent, *, ttl: int) -> RatingEvent:
    """The event first accepted under this Idempotency-Key (its `event_id`), or this one.

    A retry must republish the same event, `occurred_at` included: with a fresh timestamp a
    late retry would overwrite a newer rating of the same film.
    """
    key = IDEMPOTENCY_KEY.format(user_id=event.user_id, key=event.event_id)
    stored = await redis.set(
        key, f"{event.routing_key} {event.model_dump_json()}", nx=True, get=True, ex=ttl
    )
    if stored is None:
        return event
    text = stored.decode() if isinstance(stored, bytes) else str(stored)
    routing_key, _, body = text.partition(" ")
    event_type = EVENT_TYPES.get(routing_key)
    if event_type is not type(event):
        raise IdempotencyKeyReused
    first = event_type.model_validate_json(body)
    if first.model_dump(exclude={"occurred_at"}) != event.model_dump(exclude={"occurred_at"}):
        raise IdempotencyKeyReused
    return first


@dataclass(frozen=True, slots=True)
class Intake:
    """What accepting a rating needs, built once in the lifespan."""

    redis: Redis
    broker: RabbitBroker
    settings: Settings
    clock: RatingClock


async def ensure_may_rate(intake: Intake, claims: TokenClaims) -> None:
    """Refuses a viewer who may not rate before the change is stamped."""
    if (
        not claims.is_verified
        and not intake.settings.ratings_allow_unverified
        and not await confirmed_since_issued(intake.redis, claims)
    ):
        raise NotVerified


async def accept_rating_event(
    intake: Intake, event: RatingEvent, *, idempotent: bool
) -> RatingEvent:
    """The event as published (the first one under a reused Idempotency-Key)."""
    if idempotent:
        event = await recall_or_remember(intake.redis, event, ttl=intake.settings.idempotency_ttl)
    await publish_rating_event(intake.broker, event, timeout=intake.settings.publish_timeout)
    return event
