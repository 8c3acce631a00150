"""fastapi_ws through its dependencies' outages: events held unacked, chat posts refused, not hung."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit

import aio_pika
import pytest
from faststream.rabbit import RabbitBroker
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import publish_event
from fastapi_ws.config import Settings
from fastapi_ws.hub import COMMAND_TIMEOUT, Hub
from tests.ratings_pipeline import url_through
from tests.support import (
    DATABASE_OUTAGES,
    DatabaseOutage,
    ServiceProcess,
    TcpProxy,
    database_outage,
    make_token,
    wait_for,
)
from tests.ws.client import ChatClient
from tests.ws.conftest import start_ws
from tests.ws.factories import (
    create_recommendations,
    create_user_verified,
    stored_messages,
    titles_of,
    wait_for_messages,
)

SessionMaker = async_sessionmaker[AsyncSession]

# Long enough for a consumer that nacks at once to burn the delivery limit many times over.
OUTAGE_WINDOW = 3.0


@pytest.fixture
async def sole_consumer(ws_service: ServiceProcess) -> AsyncIterator[None]:
    """The suite's fastapi_ws stopped, so that the test's own process takes every event."""
    ws_service.stop()
    try:
        yield
    finally:
        await ws_service.start()


@pytest.fixture
async def redis_proxy() -> AsyncIterator[TcpProxy]:
    target = urlsplit(os.environ["REDIS_URL"])
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    yield proxy
    await proxy.close()


def redis_url_through(proxy: TcpProxy) -> str:
    return url_through(os.environ["REDIS_URL"], proxy.port)


async def queue_counts() -> tuple[int, int]:
    """Messages ready in `ws.events` and messages in `ws.events.dead`."""
    connection = await aio_pika.connect(os.environ["RABBITMQ_URL"])
    async with connection:
        channel = await connection.channel()
        counts = []
        for name in ("ws.events", "ws.events.dead"):
            queue = await channel.declare_queue(name, passive=True)
            counts.append(int(queue.declaration_result.message_count or 0))
        return counts[0], counts[1]


async def purge_dead_letters() -> None:
    connection = await aio_pika.connect(os.environ["RABBITMQ_URL"])
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("ws.events.dead", passive=True)
        await queue.purge()


@pytest.mark.usefixtures("sole_consumer")
@pytest.mark.parametrize("kind", DATABASE_OUTAGES)
async def test_event_held_through_database_outage_then_pushed_once(
    publisher: RabbitBroker, db: SessionMaker, user_id: uuid.UUID, kind: str
) -> None:
    await purge_dead_letters()
    async with database_outage(kind, Settings().database_url) as outage:
        await _held_then_pushed_once(publisher, db, user_id, outage)


async def _held_then_pushed_once(
    publisher: RabbitBroker, db: SessionMaker, user_id: uuid.UUID, outage: DatabaseOutage
) -> None:
    proc = await start_ws(gateway=None, **{k.upper(): v for k, v in outage.settings.items()})
    try:
        await publish_event(publisher, create_user_verified(user_id))
        await wait_for_messages(db, user_id, 1)
        client = await ChatClient.open(proc.url, make_token(user_id))
        [welcome] = await client.history()

        await outage.begin()
        await publish_event(publisher, create_recommendations(user_id, ("Alien",)))

        async def taken() -> bool:
            return await queue_counts() == (0, 0)

        await wait_for(taken)
        await asyncio.sleep(OUTAGE_WINDOW)
        # Taken by the consumer and neither applied nor dead-lettered: held unacked.
        assert await queue_counts() == (0, 0)
        assert len(await stored_messages(db, user_id)) == 1

        await outage.end()
        picks = await client.message(timeout=30)
        assert (picks["seq"], picks["kind"], titles_of(picks)) == (2, "recommendations", ["Alien"])
        await client.nothing_within(1.0)
        assert [(m.seq, m.kind) for m in await stored_messages(db, user_id)] == [
            (welcome["seq"], "system"),
            (2, "recommendations"),
        ]
        assert await queue_counts() == (0, 0)
        await client.close()
    finally:
        proc.stop()


async def test_chat_post_while_redis_stalls_closes_socket_try_again_later(
    db: SessionMaker, redis_proxy: TcpProxy, user_id: uuid.UUID
) -> None:
    proc = await start_ws(
        REDIS_URL=redis_url_through(redis_proxy),
        # The socket's own revocation checks would also notice the stall, and the pongs it
        # does not read while the post waits would end it as silent; this is the post's.
        CHAT_REVOCATION_CHECK_INTERVAL="3600",
        CHAT_HEARTBEAT_TIMEOUT="60",
    )
    try:
        client = await ChatClient.open(proc.url, make_token(user_id))
        await client.history()

        redis_proxy.hold()
        await client.send_chat("anyone there?")

        assert await client.closed(timeout=30) == 1013
        assert client.close_reason == "SERVICE_UNAVAILABLE"
        # Stored before the push: the client finds it when it resumes.
        assert [m.body for m in await stored_messages(db, user_id)][-1] == "anyone there?"
    finally:
        redis_proxy.release()
        proc.stop()


async def test_push_to_redis_that_never_answers_fails() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hub = Hub(f"redis://127.0.0.1:{port}/0", cast(Any, None), cast(Any, None), Settings())
    try:
        # A hang would end in asyncio's TimeoutError instead, which is not redis-py's.
        with pytest.raises(RedisTimeoutError):
            async with asyncio.timeout(30):
                await hub.push(uuid.uuid4(), 1, "{}")
    finally:
        await hub.redis.aclose()
        server.close()
        await server.wait_closed()


async def test_fanout_subscription_kept_while_idle_and_renewed_when_redis_stops_answering(
    redis_proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    url = redis_url_through(redis_proxy)
    # Pings further apart than a command's timeout, which must not cut the idle subscription.
    hub = Hub(url, cast(Any, None), cast(Any, None), Settings(), ping_interval=COMMAND_TIMEOUT + 1)
    await hub.start()

    def renewals() -> int:
        return sum("fan-out subscription lost" in r.getMessage() for r in caplog.records)

    try:
        await asyncio.wait_for(hub.subscribed.wait(), 10)
        await asyncio.sleep(3 * (COMMAND_TIMEOUT + 1))
        assert renewals() == 0

        redis_proxy.hold()

        async def renewed() -> bool:
            return renewals() > 0

        await wait_for(renewed, timeout=30)
        redis_proxy.release()
        await asyncio.wait_for(hub.subscribed.wait(), 30)
    finally:
        redis_proxy.release()
        await hub.stop()
