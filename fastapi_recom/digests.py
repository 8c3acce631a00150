"""Consumer of `notifications.digest.requested`: picks for each listed viewer, published for the digest."""

from __future__ import annotations

import asyncio
import logging
import uuid

from fastapi import FastAPI
from faststream import AckPolicy
from faststream.exceptions import RejectMessage
from faststream.rabbit import RabbitBroker, RabbitMessage
from pydantic import ValidationError

from contracts.broker import EVENTS_EXCHANGE, consumer_queue, declare_topology
from contracts.events import DigestRequested
from fastapi_recom.events import publish_recommendations
from fastapi_recom.recommender import Recommendation

logger = logging.getLogger(__name__)

DIGEST_QUEUE = "recom.digests"
DIGEST_LIMIT = 10
# How long a digest waits for the first matrix load before it is retried (nacked).
READY_TIMEOUT = 10.0


async def declare_digest_topology(broker: RabbitBroker) -> None:
    await declare_topology(broker, DIGEST_QUEUE, [DigestRequested.routing_key])


def register_digest_consumer(broker: RabbitBroker, app: FastAPI) -> None:
    """Subscribe before the broker starts; the handler reads the matrix from `app.state`."""

    @broker.subscriber(
        consumer_queue(DIGEST_QUEUE),
        EVENTS_EXCHANGE,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="recom.digests",
    )
    async def handle_digest_requested(message: RabbitMessage) -> None:
        # A redelivery publishes again, under the same event ids (`_viewer_event_id`), so the
        # chat room takes each viewer's digest once; the period lets notifications deduplicate.
        try:
            event = DigestRequested.model_validate_json(message.body)
        except ValidationError as exc:
            logger.warning("malformed digest request %s: %s", message.message_id, exc)
            raise RejectMessage from exc  # straight to recom.digests.dead
        store = app.state.store
        async with asyncio.timeout(READY_TIMEOUT):
            await store.ready.wait()
        # An e-mail cannot be corrected once sent: the catalogue as of now first (one small
        # query), so a film listed or withdrawn since the last titles poll counts already.
        try:
            await store.refresh_titles()
        except Exception as exc:  # the database may be down: the picks still go out
            logger.warning("film catalogue not refreshed for a digest: %r", exc)
        strategy = app.state.strategy
        recommendations: list[Recommendation] = []
        for user_id in event.user_ids:
            recommendations.append(store.matrix.recommend(user_id, DIGEST_LIMIT, strategy))
            # Milliseconds each on a large set, hundreds a message: requests go on meanwhile.
            # One `recommend` never yields, so the matrix cannot change under it.
            await asyncio.sleep(0)
        for recommendation in recommendations:
            await publish_recommendations(
                broker,
                recommendation,
                store.titles,
                "digest",
                _viewer_event_id(event, recommendation.user_id),
            )
        logger.info("digest picks published for %s users", len(event.user_ids))


def _viewer_event_id(request: DigestRequested, user_id: uuid.UUID) -> uuid.UUID:
    """The same for every delivery of one request: fastapi_ws records events by id."""
    return uuid.uuid5(request.event_id, str(user_id))
