"""Publishing of the rating events: confirmed by RabbitMQ, or a 503 the client can retry."""

import logging

from faststream.rabbit import RabbitBroker

from contracts.broker import PublishFailed, publish_event
from contracts.events import RatingDeleted, RatingSubmitted
from fastapi_ugc.errors import BrokerUnavailable

logger = logging.getLogger(__name__)

RatingEvent = RatingSubmitted | RatingDeleted


async def publish_rating_event(broker: RabbitBroker, event: RatingEvent, *, timeout: float) -> None:
    try:
        await publish_event(broker, event, timeout=timeout)
    except PublishFailed as exc:
        logger.warning("rating event not accepted: %s", exc)
        raise BrokerUnavailable from exc
