"""Test tools of the ratings pipeline: the real broker's queues, raw publishes, stored rows."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from sqlalchemy import func, select, tuple_

from contracts.broker import EVENTS_EXCHANGE, declare_topology, make_broker
from contracts.db import make_engine
from contracts.events import Event
from fastapi_recom.config import get_settings as recom_settings
from fastapi_recom.consumers import RATING_EVENTS, RATINGS_QUEUE
from fastapi_recom.models import Rating

DEAD_QUEUE = f"{RATINGS_QUEUE}.dead"


# Read once at import: tests that route a service through a TcpProxy change the variable,
# while the test's own connections keep going to the broker directly.
RABBITMQ_URL = os.environ["RABBITMQ_URL"]


@dataclass
class Rabbit:
    """A test's own connection to the suite's vhost, with publisher confirms."""

    channel: AbstractChannel
    exchange: AbstractExchange

    async def publish(
        self,
        body: bytes,
        routing_key: str,
        *,
        message_id: str | None = None,
    ) -> None:
        await self.exchange.publish(
            aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id or str(uuid.uuid4()),
                content_type="application/json",
            ),
            routing_key=routing_key,
            mandatory=True,
            timeout=10,
        )

    async def publish_events(self, events: Iterable[Event], *, concurrency: int = 200) -> None:
        """Confirmed publishes, many in flight at once (the broker confirms them pipelined)."""
        gate = asyncio.Semaphore(concurrency)

        async def one(event: Event) -> None:
            async with gate:
                await self.publish(
                    event.model_dump_json().encode(),
                    event.routing_key,
                    message_id=str(event.event_id),
                )

        await asyncio.gather(*(one(event) for event in events))

    async def depth(self, queue_name: str) -> int:
        """Messages ready in the queue (not those delivered and not yet acknowledged)."""
        queue = await self.channel.declare_queue(queue_name, passive=True)
        count = queue.declaration_result.message_count
        return int(count or 0)

    async def purge(self, *queue_names: str) -> None:
        for name in queue_names:
            queue = await self.channel.declare_queue(name, passive=True)
            await queue.purge()

    async def take_all(self, queue_name: str) -> list[AbstractIncomingMessage]:
        """Everything ready in a queue, acknowledged (removed)."""
        queue = await self.channel.declare_queue(queue_name, passive=True)
        taken = []
        while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
            taken.append(message)
        return taken


async def declare_ratings_topology() -> None:
    """As recom does at start-up, so that UGC's mandatory publishes are routable."""
    broker = make_broker(RABBITMQ_URL)
    await broker.connect()
    try:
        await declare_topology(broker, RATINGS_QUEUE, tuple(RATING_EVENTS))
    finally:
        await broker.stop()


@asynccontextmanager
async def empty_ratings_queues() -> AsyncIterator[Rabbit]:
    """The ratings queue and its dead-letter queue declared and emptied; a connection to both."""
    await declare_ratings_topology()
    async with open_rabbit() as rabbit:
        await rabbit.purge(RATINGS_QUEUE, DEAD_QUEUE)
        yield rabbit


@asynccontextmanager
async def open_rabbit() -> AsyncIterator[Rabbit]:
    connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE.name)
        yield Rabbit(channel, exchange)
    finally:
        await connection.close()


StoredRating = tuple[int, datetime, bool]


async def stored_ratings(
    user_ids: Iterable[uuid.UUID],
) -> dict[tuple[uuid.UUID, uuid.UUID], StoredRating]:
    """(user, movie) → (score, rated_at, deleted) of recom's rows for these viewers."""
    engine = make_engine(recom_settings().database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(
                    Rating.user_id, Rating.movie_id, Rating.score, Rating.rated_at, Rating.deleted
                ).where(Rating.user_id.in_(list(user_ids)))
            )
            return {(r.user_id, r.movie_id): (r.score, r.rated_at, r.deleted) for r in rows}
    finally:
        await engine.dispose()


async def count_ratings(user_ids: Iterable[uuid.UUID]) -> int:
    """Rows of these viewers: cheaper than fetching them, for polling."""
    engine = make_engine(recom_settings().database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            query = (
                select(func.count()).select_from(Rating).where(Rating.user_id.in_(list(user_ids)))
            )
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def stored_rows(pairs: Iterable[tuple[uuid.UUID, uuid.UUID]]) -> list[tuple[object, ...]]:
    """Full rows, `updated_at` included, to prove that a replay wrote nothing."""
    engine = make_engine(recom_settings().database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(Rating.__table__)
                .where(tuple_(Rating.user_id, Rating.movie_id).in_(list(pairs)))
                .order_by(Rating.user_id, Rating.movie_id)
            )
            return [tuple(row) for row in rows]
    finally:
        await engine.dispose()


def url_through(url: str, proxy_port: int) -> str:
    """The same URL with host and port replaced by a TcpProxy's."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy_port}" if credentials else f"127.0.0.1:{proxy_port}"
    return urlunsplit(parts._replace(netloc=netloc))


def deaths(message: AbstractIncomingMessage) -> list[dict[str, Any]]:
    """The broker's `x-death` records of a dead-lettered message."""
    return cast(list[dict[str, Any]], message.headers["x-death"])
