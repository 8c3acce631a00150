"""Fixtures of the notifications suite: an SMTP sink, the service in-process, a stand-in recom."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import aio_pika
import pytest
from asgi_lifespan import LifespanManager
from faststream.rabbit import RabbitBroker
from httpx import ASGITransport, AsyncClient
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import make_broker, publish_event
from contracts.db import make_engine, make_sessionmaker
from contracts.events import DigestRequested, Event, RecommendationsGenerated, RecommendedItem
from notifications_service.config import Settings, get_settings
from notifications_service.models import Delivery, Recipient
from tests.notifications.sink import SmtpSink
from tests.support import wait_for

# Fast retries and polls so the suite exercises backoff in seconds, not minutes.
TEST_SETTINGS = {
    "SMTP_HOST": "127.0.0.1",
    "RETRY_BASE_SECONDS": "0.2",
    "RETRY_MAX_SECONDS": "0.5",
    "DELIVERY_POLL_SECONDS": "0.1",
    "DIGEST_SCHEDULER_SECONDS": "0",
    "DIGEST_HOUR_UTC": "0",
    "DIGEST_WEEKDAY": "0",
    "SMTP_CONNECTIONS": "2",
}


@pytest.fixture
def service_settings() -> Settings:
    return Settings.model_validate({k.lower(): v for k, v in TEST_SETTINGS.items()})


@pytest.fixture(scope="session")
def smtp_sink() -> Any:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
async def broker() -> AsyncIterator[RabbitBroker]:
    broker = make_broker(os.environ["RABBITMQ_URL"])
    await broker.connect()
    yield broker
    await broker.stop()


@pytest.fixture(scope="session")
async def db() -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(get_settings().database_url, pool_size=2)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture(autouse=True)
async def clean_state(db: async_sessionmaker[AsyncSession]) -> None:
    """Each test starts from an empty directory and queue: digest rounds look at every viewer."""
    async with db() as session:
        await session.execute(text("TRUNCATE delivery, recipient"))
        await session.commit()
    connection = await aio_pika.connect(os.environ["RABBITMQ_URL"])
    async with connection:
        for name in ("notifications.events", "notifications.events.dead"):
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                queue = await channel.declare_queue(name, passive=True)
                await queue.purge()


@dataclass
class Service:
    client: AsyncClient
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]


StartService = Callable[..., AbstractAsyncContextManager[Service]]


@pytest.fixture
def start_service(smtp_sink: SmtpSink) -> StartService:
    """The app in-process with its lifespan: consumers, sender and routes on real services."""

    @asynccontextmanager
    async def start(**overrides: str) -> AsyncIterator[Service]:
        from notifications_service.main import app

        env = {**TEST_SETTINGS, "SMTP_PORT": str(smtp_sink.port), **overrides}
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            get_settings.cache_clear()
            try:
                async with (
                    LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager,
                    AsyncClient(
                        transport=ASGITransport(app=manager.app), base_url="http://test"
                    ) as client,
                ):

                    async def ready() -> bool:
                        return (await client.get("/notifications/ready")).status_code == 200

                    await wait_for(ready, timeout=20)
                    yield Service(client, get_settings(), app.state.sessionmaker)
            finally:
                get_settings.cache_clear()

    return start


@pytest.fixture
async def service(start_service: StartService) -> AsyncIterator[Service]:
    async with start_service() as running:
        yield running


def picks(*titles: str) -> list[RecommendedItem]:
    return [
        RecommendedItem(
            movie_id=uuid.uuid4(), title=title, score=9.0 - i, reason=f"Because you liked film {i}"
        )
        for i, title in enumerate(titles)
    ]


@dataclass
class FakeRecom:
    """Stands in for recom: takes `notifications.digest.requested` and answers with picks."""

    broker: RabbitBroker
    answers_per_request: int = 1
    requests: list[DigestRequested] = field(default_factory=list)
    _connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(os.environ["RABBITMQ_URL"])
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            "cinema.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, DigestRequested.routing_key)
        await queue.consume(self._on_request)

    async def _on_request(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            request = DigestRequested.model_validate_json(message.body)
            self.requests.append(request)
            for _ in range(self.answers_per_request):
                for user_id in request.user_ids:
                    await publish_event(
                        self.broker,
                        RecommendationsGenerated(
                            user_id=user_id,
                            items=picks("Heat", "Ronin"),
                            strategy="user-user-cosine",
                            trigger="digest",
                        ),
                    )

    def requested(self) -> list[uuid.UUID]:
        return [user_id for request in self.requests for user_id in request.user_ids]

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()


@pytest.fixture
async def recom(broker: RabbitBroker) -> AsyncIterator[FakeRecom]:
    fake = FakeRecom(broker)
    await fake.start()
    yield fake
    await fake.stop()


async def create_recipient(session: AsyncSession, **overrides: Any) -> Recipient:
    user_id = overrides.pop("user_id", uuid.uuid4())
    recipient = Recipient(
        user_id=user_id,
        email=overrides.pop("email", f"viewer-{user_id.hex[:12]}@example.com"),
        full_name=overrides.pop("full_name", "Ann Viewer"),
        is_verified=overrides.pop("is_verified", True),
        digest_frequency=overrides.pop("digest_frequency", "daily"),
        **overrides,
    )
    session.add(recipient)
    await session.commit()
    return recipient


async def deliveries(
    sessionmaker: async_sessionmaker[AsyncSession], user_id: uuid.UUID
) -> list[Delivery]:
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(Delivery).where(Delivery.user_id == user_id).order_by(Delivery.delivery_id)
        )
        return list(rows.all())


async def count_status(sessionmaker: async_sessionmaker[AsyncSession], status: str) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).where(Delivery.status == status)) or 0)


async def publish(broker: RabbitBroker, *events: Event) -> None:
    await asyncio.gather(*(publish_event(broker, event) for event in events))


def body(message: EmailMessage, subtype: str) -> str:
    """The `plain` or `html` part, with SMTP's CRLF line ends back to LF."""
    part = message.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content()).replace("\r\n", "\n")
