"""RabbitMQ topology of DESIGN.md and the one way to publish an event: persistent, confirmed, mandatory."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import aio_pika
import aiormq
from faststream.exceptions import RejectMessage
from faststream.rabbit import (
    Channel,
    ExchangeType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from faststream.rabbit.schemas.queue import QueueType
from pamqp.commands import Basic
from prometheus_client import Counter
from pydantic import ValidationError

from contracts.errors import is_dependency_error
from contracts.events import Event

logger = logging.getLogger(__name__)

T = TypeVar("T")

EVENTS_EXCHANGE = RabbitExchange("cinema.events", type=ExchangeType.TOPIC, durable=True)
DEAD_EXCHANGE = RabbitExchange("cinema.dead", type=ExchangeType.DIRECT, durable=True)

PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)

# A failing message is retried this many times before it is dead-lettered.
DEFAULT_DELIVERY_LIMIT = 5


EVENTS_CONSUMED = Counter(
    "events_consumed_total",
    "Events taken from a queue, by outcome (handled, dead_lettered, failed)",
    ["queue", "outcome"],
)


@contextmanager
def consumption_metered(queue_name: str) -> Iterator[None]:
    """Count one event of `queue_name` by how its handler ended (the exception still propagates)."""
    try:
        yield
    except RejectMessage:
        EVENTS_CONSUMED.labels(queue_name, "dead_lettered").inc()
        raise
    except Exception:
        EVENTS_CONSUMED.labels(queue_name, "failed").inc()
        raise
    EVENTS_CONSUMED.labels(queue_name, "handled").inc()


def decode_event(event_types: Mapping[str, type[Event]], routing_key: str, body: bytes) -> Event:
    """The event a consumer expects under `routing_key`, or RejectMessage: an unknown key or a
    malformed body goes to the dead-letter queue at once, since retrying cannot help."""
    event_type = event_types.get(routing_key)
    if event_type is None:
        logger.error("unexpected routing key %r: dead-lettered", routing_key)
        raise RejectMessage
    try:
        return event_type.model_validate_json(body)
    except ValidationError as exc:
        logger.error("malformed %s dead-lettered: %s", routing_key, exc.errors()[:3])
        raise RejectMessage from exc


async def with_patience(
    attempt: Callable[[], Awaitable[T]], patience: float, *, dependency: str
) -> T:
    """Run `attempt` until it gets past an outage of `dependency` (a database or Redis error),
    backing off up to 10 s between tries, and re-raise once `patience` seconds are spent.

    A consumer waits this way with its message unacked: a nack would requeue it at once, and
    the queue's delivery limit would dead-letter it within seconds of an outage.
    """
    deadline = time.monotonic() + patience
    delay = 0.2
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not is_dependency_error(exc) or time.monotonic() + delay > deadline:
                raise
            logger.warning("%s unavailable, retrying in %.1f s: %r", dependency, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


class ReturnedBodyRedactor(logging.Filter):
    """aiormq logs a returned message it cannot match to a publish (one that came back after
    its publish timed out) at ERROR with `%r` of the whole message: the event's body, with a
    viewer's id and their ratings or picks, would land in the logs. This keeps the routing key,
    the message id and the size, which are enough to find the event, and drops the body."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, aiormq.abc.DeliveredMessage) for arg in record.args
        ):
            record.args = tuple(
                _summary(arg) if isinstance(arg, aiormq.abc.DeliveredMessage) else arg
                for arg in record.args
            )
        return True


def _summary(message: aiormq.abc.DeliveredMessage) -> str:
    properties = message.header.properties
    return (
        f"<message exchange={message.exchange!r} routing_key={message.routing_key!r} "
        f"message_id={properties.message_id!r} body={len(message.body)} bytes>"
    )


_redactor = ReturnedBodyRedactor()


class PublishFailed(Exception):
    """The broker did not confirm the message (down, blocked, unroutable or too slow)."""


def make_broker(url: str, *, prefetch: int | None = None, timeout: float = 5.0) -> RabbitBroker:
    """A broker whose publishes wait for confirms and raise when a mandatory message is returned."""
    channel_log = logging.getLogger("aiormq.channel")
    if _redactor not in channel_log.filters:
        channel_log.addFilter(_redactor)
    return RabbitBroker(
        url,
        timeout=timeout,
        fail_fast=False,
        reconnect_interval=1.0,
        default_channel=Channel(
            prefetch_count=prefetch, publisher_confirms=True, on_return_raises=True
        ),
        logger=logging.getLogger("faststream"),
        log_level=logging.DEBUG,
    )


def dead_letter_queue(queue_name: str) -> RabbitQueue:
    return RabbitQueue(
        f"{queue_name}.dead",
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=queue_name,
    )


def consumer_queue(queue_name: str, *, delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> RabbitQueue:
    """A quorum queue that dead-letters to `cinema.dead` with its own name as routing key."""
    return RabbitQueue(
        queue_name,
        queue_type=QueueType.QUORUM,
        durable=True,
        arguments={
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": DEAD_EXCHANGE.name,
            "x-dead-letter-routing-key": queue_name,
        },
    )


async def declare_topology(
    broker: RabbitBroker,
    queue_name: str,
    routing_keys: Iterable[str],
    *,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> None:
    """Declare the exchanges, a consumer's queue bound to its routing keys, and its dead-letter queue.

    Called by the consumer at start-up, before its subscriber starts, so that no event
    published in between is unroutable.
    """
    events = await broker.declare_exchange(EVENTS_EXCHANGE)
    dead = await broker.declare_exchange(DEAD_EXCHANGE)
    dead_queue = await broker.declare_queue(dead_letter_queue(queue_name))
    await dead_queue.bind(dead, routing_key=queue_name)
    queue = await broker.declare_queue(consumer_queue(queue_name, delivery_limit=delivery_limit))
    for key in routing_keys:
        await queue.bind(events, routing_key=key)


# The events exchange of each broker, as FastStream's declarer caches it: looking it up there
# (hashing the exchange's settings) cost each publish 3 % of a rating's CPU.
_events_exchanges: weakref.WeakKeyDictionary[RabbitBroker, aio_pika.RobustExchange] = (
    weakref.WeakKeyDictionary()
)


async def publish_event(broker: RabbitBroker, event: Event, *, timeout: float = 3.0) -> None:
    """Publish persistently with confirms; raise PublishFailed unless the broker confirmed in time.

    The message goes out on the confirming channel of the broker's own (cached, robust)
    aio-pika exchange, as aio-pika's `Exchange.publish` sends it, rather than through
    `broker.publish`: FastStream's publish pipeline (command, middlewares, encoder) cost 40 %
    more CPU per message, and aio-pika's `Message` wrapper another 5 % of a rating's CPU,
    which the ratings hot path cannot pay. The channel raises when a mandatory message is
    returned (`on_return_raises`), and a nack is a DeliveryError.
    """
    try:
        async with asyncio.timeout(timeout):
            exchange = _events_exchanges.get(broker)
            if exchange is None or exchange.channel.is_closed:
                exchange = await broker.declare_exchange(EVENTS_EXCHANGE)
                _events_exchanges[broker] = exchange
            if exchange.channel.is_closed:  # reconnecting: answer now, not after the timeout
                raise aiormq.exceptions.ChannelInvalidStateError("channel closed")
            channel = await exchange.channel.get_underlay_channel()
            confirmation = await channel.basic_publish(
                event.model_dump_json().encode(),
                exchange=exchange.name,
                routing_key=event.routing_key,
                properties=Basic.Properties(
                    delivery_mode=PERSISTENT,
                    message_id=str(event.event_id),
                    content_type="application/json",
                    message_type=event.routing_key,
                ),
                mandatory=True,
            )
    except Exception as exc:  # not connected, closed channel, returned, nacked, timed out
        raise PublishFailed(f"{event.routing_key} {event.event_id}: {exc!r}") from exc
    if not isinstance(confirmation, Basic.Ack):
        raise PublishFailed(
            f"{event.routing_key} {event.event_id}: not confirmed ({confirmation!r})"
        )


def start_broker(
    broker: RabbitBroker, setup: Callable[[], Awaitable[None]] | None = None
) -> asyncio.Task[None]:
    """Connect in the background, declare topology, then start subscribers.

    The service serves HTTP (and answers /ready with 503) while the broker is unreachable;
    aio-pika's robust connection reconnects by itself afterwards.
    """

    async def run() -> None:
        while True:
            try:
                await broker.connect()
                if setup is not None:
                    await setup()
                await broker.start()
                logger.info("broker connected and subscribers started")
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("broker start failed, retrying in 1 s: %r", exc)
                await asyncio.sleep(1)

    return asyncio.create_task(run(), name="broker-start")
