"""Fixtures of the fastapi_ws suite: a running service, a publisher on the real broker, the database."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from faststream.rabbit import RabbitBroker
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import make_broker
from contracts.db import make_engine, make_sessionmaker
from fastapi_ws.config import Settings
from fastapi_ws.consumers import declare_ws_topology
from tests.support import ServiceProcess, TcpProxy
from tests.ws.client import TEST_ORIGIN

# Short timers so that heartbeats, revocation checks and expiry show within a test.
FAST_TIMERS = {
    "ALLOWED_ORIGINS": TEST_ORIGIN,
    "CHAT_HEARTBEAT_INTERVAL": "0.3",
    "CHAT_HEARTBEAT_TIMEOUT": "1.5",
    "CHAT_REVOCATION_CHECK_INTERVAL": "0.3",
    "CHAT_AUTH_TIMEOUT": "1.0",
    "CHAT_DEDUP_WINDOW": "60",
    "CHAT_HISTORY_LIMIT": "5",
    "CHAT_SEND_QUEUE": "16",
    "LOG_LEVEL": "WARNING",
}


async def start_ws(*, gateway: TcpProxy | None = None, **env: str) -> ServiceProcess:
    proc = ServiceProcess("fastapi_ws.main:app", "ws", env={**FAST_TIMERS, **env})
    if gateway is not None:
        # The browser loads the page through the gateway, so that is the origin it sends.
        gateway.target = ("127.0.0.1", proc.port)
        proc.env["ALLOWED_ORIGINS"] = f"{TEST_ORIGIN},{gateway_url(gateway)}"
    await proc.start()
    return proc


def gateway_url(gateway: TcpProxy) -> str:
    return f"http://127.0.0.1:{gateway.port}"


@pytest.fixture(scope="session")
async def chat_gateway() -> AsyncIterator[TcpProxy]:
    """A TCP relay in front of `ws_service` that a test can cut, as a network drop would."""
    gateway = TcpProxy("127.0.0.1", 0)
    yield gateway
    await gateway.close()


@pytest.fixture(scope="session")
async def ws_service(chat_gateway: TcpProxy) -> AsyncIterator[ServiceProcess]:
    proc = await start_ws(gateway=chat_gateway)
    await chat_gateway.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
async def publisher() -> AsyncIterator[RabbitBroker]:
    broker = make_broker(os.environ["RABBITMQ_URL"])
    await broker.connect()
    # Declared here too, so that a publish before the service's start-up is still routed.
    await declare_ws_topology(broker)
    yield broker
    await broker.stop()


@pytest.fixture(scope="session")
async def db() -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(Settings().database_url, pool_size=2)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def user_id() -> uuid.UUID:
    return uuid.uuid4()
