"""The `recom.ratings` subscriber: batches rating events into one upsert, acks after the commit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from fastapi import Request
from faststream.rabbit import RabbitBroker
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import declare_topology
from contracts.errors import DEPENDENCY_ERRORS
from contracts.events import RatingDeleted, RatingSubmitted
from fastapi_recom.ratings import RatingChange, apply_changes

logger = logging.getLogger(__name__)

RATINGS_QUEUE = "recom.ratings"
RATING_EVENTS: dict[str, type[RatingSubmitted] | type[RatingDeleted]] = {
    RatingSubmitted.routing_key: RatingSubmitted,
    RatingDeleted.routing_key: RatingDeleted,
}

# Seconds the set-up (declarations, channel, consume) may take before it is retried.
START_TIMEOUT = 15.0

# Waits between attempts to write a batch while the database is unreachable.
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)

RATING_EVENTS_TOTAL = Counter(
    "recom_rating_events_total",
    "Rating events taken from recom.ratings by outcome",
    ["outcome"],
)

Write = Callable[[AsyncSession, Sequence[RatingChange]], Awaitable[None]]


class MalformedEvent(ValueError):
    """Not JSON, or not a rating event: retrying cannot help, so it is dead-lettered at once."""


def parse_change(routing_key: str | None, body: bytes) -> RatingChange:
    event_type = RATING_EVENTS.get(routing_key or "")
    if event_type is None:
        raise MalformedEvent(f"unexpected routing key {routing_key!r}")
    try:
        event = event_type.model_validate_json(body)
    except ValidationError as exc:
        raise MalformedEvent(f"{exc.error_count()} error(s): {exc.errors()[0]['msg']}") from exc
    if event.occurred_at.utcoffset() is None:
        raise MalformedEvent("occurred_at has no time zone")
    return RatingChange.from_event(event)


def is_transient(exc: BaseException) -> bool:
    """The database is down or unreachable, as opposed to this batch being unwritable."""
    return isinstance(exc, DEPENDENCY_ERRORS) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


class RatingsConsumer:
    """Consumes `recom.ratings` on a connection of its own with a large prefetch.

    Deliveries gather for at most `window` seconds or `batch_size` messages; the batch is
    written with one upsert and committed, and only then acknowledged. A crash before the
    acks gets the batch redelivered, which the upsert turns into a no-op. aio-pika is used
    directly because FastStream handles one message at a time (about eight times slower here)
    and has no batch acknowledgement for RabbitMQ.
    """

    def __init__(
        self,
        url: str,
        *,
        queue_name: str = RATINGS_QUEUE,
        prefetch: int = 1000,
        batch_size: int = 500,
        window: float = 0.05,
        delivery_limit: int | None = None,
        write: Write = apply_changes,
    ) -> None:
        self.queue_name = queue_name
        self._url = url
        self._prefetch = prefetch
        self._batch_size = batch_size
        self._window = window
        self._delivery_limit = delivery_limit
        self._write = write
        self._sessionmaker: async_sessionmaker[AsyncSession] | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._writer: asyncio.Task[None] | None = None
        self._pending: list[tuple[RatingChange, AbstractIncomingMessage]] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._stopping = False

    @property
    def consuming(self) -> bool:
        return (
            self._consumer_tag is not None
            and self._connection is not None
            and self._connection.connected.is_set()
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def start(
        self, broker: RabbitBroker, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        """Declare the queue and its bindings, then consume. Safe to call again after a failure."""
        if self._consumer_tag is not None:
            return
        self._sessionmaker = sessionmaker
        limit = {} if self._delivery_limit is None else {"delivery_limit": self._delivery_limit}
        try:
            # A broker that never answers an RPC must not leave recom unready for good: the
            # set-up fails instead, and start_broker tries it again.
            async with asyncio.timeout(START_TIMEOUT):
                await declare_topology(broker, self.queue_name, tuple(RATING_EVENTS), **limit)
                await self._consume()
        except BaseException:
            await self._close_connection()
            raise
        logger.info(
            "consuming %s (prefetch %s, batches of %s within %s s)",
            self.queue_name,
            self._prefetch,
            self._batch_size,
            self._window,
        )

    async def _consume(self) -> None:
        if self._connection is None:
            self._connection = await aio_pika.connect_robust(
                self._url, timeout=5, reconnect_interval=1.0
            )
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await self._channel.get_queue(self.queue_name)
        self._stopping = False
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="ratings-writer")
        self._consumer_tag = await self._queue.consume(self._receive)

    async def stop(self, *, timeout: float = 5.0) -> None:
        """Stop taking deliveries, write what is already held, then close the connection."""
        if self._queue is not None and self._consumer_tag is not None:
            with suppress(AMQPError, ChannelInvalidStateError, ConnectionError, TimeoutError):
                await self._queue.cancel(self._consumer_tag, timeout=1)
        self._consumer_tag = None
        self._stopping = True
        self._arrived.set()
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._writer, timeout)
            except TimeoutError:
                logger.warning("ratings writer did not finish; held messages go back to the queue")
            self._writer = None
        await self._close_connection()

    async def _close_connection(self) -> None:
        if self._connection is not None:
            with suppress(AMQPError, ChannelInvalidStateError, ConnectionError, TimeoutError):
                await self._connection.close()
            self._connection = None
            self._channel = None
            self._queue = None

    async def _receive(self, message: AbstractIncomingMessage) -> None:
        try:
            change = parse_change(message.routing_key, message.body)
        except MalformedEvent as exc:
            logger.warning("dead-lettering malformed message %s: %s", message.message_id, exc)
            RATING_EVENTS_TOTAL.labels("dead_lettered").inc()
            await _settle(message.reject, requeue=False)
            return
        self._pending.append((change, message))
        self._arrived.set()
        if len(self._pending) >= self._batch_size:
            self._full.set()

    async def _write_loop(self) -> None:
        while True:
            await self._arrived.wait()
            if not self._full.is_set() and not self._stopping:
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._window):
                        await self._full.wait()
            batch, self._pending = self._pending, []
            self._arrived.clear()
            self._full.clear()
            if batch:
                await self._settle_batch(batch)
            if self._stopping and not self._pending:
                return

    async def _settle_batch(
        self, batch: list[tuple[RatingChange, AbstractIncomingMessage]]
    ) -> None:
        changes = [change for change, _ in batch]
        attempt = 0
        while True:
            try:
                await self._write_changes(changes)
                break
            except Exception as exc:
                if not is_transient(exc):
                    logger.exception(
                        "batch of %s rating events failed; writing one by one", len(batch)
                    )
                    await self._settle_one_by_one(batch)
                    return
                if self._stopping:
                    logger.warning(
                        "database unreachable while stopping: %s events go back", len(batch)
                    )
                    return
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                logger.warning(
                    "database unreachable, retrying %s events in %s s: %r", len(batch), delay, exc
                )
                await asyncio.sleep(delay)
        RATING_EVENTS_TOTAL.labels("stored").inc(len(batch))
        await _ack_batch(message for _, message in batch)

    async def _settle_one_by_one(
        self, batch: list[tuple[RatingChange, AbstractIncomingMessage]]
    ) -> None:
        """Isolate the events that fail: the others are stored, the failing ones go back to the
        queue, whose delivery limit dead-letters them if they keep failing."""
        for change, message in batch:
            try:
                await self._write_changes([change])
            except Exception:
                logger.exception(
                    "rating event %s failed; returned to the queue", message.message_id
                )
                RATING_EVENTS_TOTAL.labels("requeued").inc()
                await _settle(message.nack, requeue=True)
            else:
                RATING_EVENTS_TOTAL.labels("stored").inc()
                await _settle(message.ack)

    async def _write_changes(self, changes: Sequence[RatingChange]) -> None:
        assert self._sessionmaker is not None
        async with self._sessionmaker() as session:
            await self._write(session, changes)


async def _ack_batch(messages: Iterable[AbstractIncomingMessage]) -> None:
    """One `multiple` ack per channel, for its newest delivery in the batch.

    Batches are settled in delivery order and every older delivery of the channel is already
    settled (earlier batches, poison rejected on arrival), so the ack covers exactly this
    batch; per-message acks cost a system call each and capped the drain rate.
    """
    newest: dict[int, AbstractIncomingMessage] = {}
    for message in messages:
        try:
            channel = message.channel
        except ChannelInvalidStateError:
            continue  # its channel closed: the broker redelivers it, the upsert ignores it
        current = newest.get(id(channel))
        if current is None or (message.delivery_tag or 0) > (current.delivery_tag or 0):
            newest[id(channel)] = message
    for message in newest.values():
        await _settle(message.ack, multiple=True)


async def _settle(action: Callable[..., Awaitable[None]], **kwargs: Any) -> None:
    # A message of a channel that has since closed is redelivered by the broker anyway.
    try:
        await action(**kwargs)
    except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
        logger.warning("could not settle a message, the broker will redeliver it: %r", exc)


async def check_ratings_consumer(request: Request) -> str | None:
    """Readiness: the consumer holds a live connection and a consumer on its queue."""
    consumer: RatingsConsumer = request.app.state.ratings_consumer
    return None if consumer.consuming else "unavailable: not consuming"
