"""Fixtures of the auth suite: the app in process with chosen settings, an event tap, the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aio_pika
import pytest
from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import EVENTS_EXCHANGE
from contracts.db import make_engine, make_sessionmaker
from fastapi_auth.config import Settings
from tests.auth.helpers import EventTap, StartAuth, client_of, protected_app, running_auth

# Every auth event must be routable in the suite's vhost, as it is where consumers run:
# this bounded queue catches them all (the tests read from their own exclusive queues).
SINK_QUEUE = "auth-tests.sink"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session", autouse=True)
async def _routable_events(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.rabbitmq_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            EVENTS_EXCHANGE.name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            SINK_QUEUE,
            durable=True,
            arguments={"x-max-length": 1000, "x-overflow": "drop-head"},
        )
        await queue.bind(exchange, routing_key="auth.#")


@pytest.fixture(scope="session")
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
async def _fresh_login_counters(redis: Redis) -> None:
    keys = [key async for key in redis.scan_iter("auth:login:*")]
    if keys:
        await redis.delete(*keys)


@pytest.fixture(scope="session")
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(settings.database_url, pool_size=2)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def start_auth(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartAuth]:
    """Start the app (lifespan and all) with settings overridden as environment variables."""
    async with AsyncExitStack() as stack:

        async def start(client_address: str = "127.0.0.1", **env: Any) -> AsyncClient:
            return await stack.enter_async_context(running_auth(monkeypatch, client_address, **env))

        yield start


@pytest.fixture
async def client(start_auth: StartAuth) -> AsyncClient:
    return await start_auth()


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[EventTap]:
    tap = EventTap(settings.rabbitmq_url.get_secret_value())
    await tap.start()
    yield tap
    await tap.close()


@pytest.fixture
async def protected(settings: Settings, redis: Redis) -> AsyncIterator[AsyncClient]:
    """A client of a service that checks tokens with the shared contracts dependency."""
    async with client_of(protected_app(settings.public_key_pem, redis)) as client:
        yield client
