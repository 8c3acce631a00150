"""The clients a service opens once in its lifespan and the dependencies that hand them out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from faststream.rabbit import RabbitBroker
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.app import ReadinessCheck
from contracts.broker import make_broker, start_broker
from contracts.db import make_engine, make_sessionmaker
from contracts.probes import check_broker, check_postgres, check_redis
from contracts.revocations import RevocationMirror
from contracts.settings import ServiceSettings
from contracts.tokens import TokenVerifier


def make_redis(settings: ServiceSettings) -> Redis:
    """A client on a blocking pool: past `redis_max_connections` a caller waits (up to 2 s) for
    a free connection instead of failing at once, as redis-py's default pool does."""
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=2,
        socket_timeout=2,
        socket_connect_timeout=2,
    )
    return Redis(connection_pool=pool)


@asynccontextmanager
async def open_resources(
    app: FastAPI,
    settings: ServiceSettings,
    *,
    database: bool,
    broker: RabbitBroker | None = None,
    broker_setup: Callable[[], Awaitable[None]] | None = None,
    mirror_revocations: bool = False,
) -> AsyncIterator[None]:
    """Open Redis, the broker and (if owned) the database; put them on `app.state`; close them.

    `mirror_revocations` keeps the revocations in memory (`contracts.revocations`), for the
    services that check a token on every request of a hot path.
    """
    redis = make_redis(settings)
    app.state.redis = redis
    revocations = RevocationMirror(redis) if mirror_revocations else None
    app.state.token_verifier = TokenVerifier(
        settings.public_key_pem, settings.jwt_audience, redis, revocations=revocations
    )
    if revocations is not None:
        revocations.start()
    app.state.broker = broker or make_broker(settings.rabbitmq_url.get_secret_value())
    engine = None
    if database:
        engine = make_engine(settings.database_url, pool_size=settings.postgres_pool_size)
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
    broker_task = start_broker(app.state.broker, broker_setup)
    try:
        yield
    finally:
        broker_task.cancel()
        with suppress(BaseException):
            await broker_task
        await app.state.broker.stop()
        if engine is not None:
            await engine.dispose()
        if revocations is not None:
            await revocations.stop()
        await redis.aclose(close_connection_pool=True)


def standard_checks(*, database: bool) -> dict[str, ReadinessCheck]:
    async def redis(request: Request) -> None:
        await check_redis(request.app.state.redis)

    async def broker(request: Request) -> str | None:
        return await check_broker(request.app.state.broker)

    async def postgres(request: Request) -> None:
        await check_postgres(request.app.state.engine)

    checks: dict[str, ReadinessCheck] = {"redis": redis, "broker": broker}
    if database:
        checks["postgres"] = postgres
    return checks


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
