"""fastapi_ugc in-process against the real broker, with the ratings queue emptied per test."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from starlette.types import ASGIApp

from fastapi_ugc.config import get_settings
from fastapi_ugc.main import app
from tests.ratings_pipeline import Rabbit, empty_ratings_queues
from tests.support import wait_for


@pytest.fixture
async def rabbit() -> AsyncIterator[Rabbit]:
    async with empty_ratings_queues() as rabbit:
        yield rabbit


@asynccontextmanager
async def serving(
    replica: FastAPI, *, wrap: Callable[[ASGIApp], ASGIApp] | None = None
) -> AsyncIterator[AsyncClient]:
    """A client of `replica`, started and with its broker connected; `wrap(app)` (ASGI
    middleware) between the two when given."""
    async with LifespanManager(replica, startup_timeout=30) as manager:
        served = manager.app if wrap is None else wrap(manager.app)
        async with AsyncClient(
            transport=ASGITransport(app=served), base_url="http://test", timeout=15
        ) as client:

            async def broker_up() -> bool:
                return (await client.get("/ugc/ready")).json()["checks"]["broker"] == "ok"

            await wait_for(broker_up, timeout=15)
            yield client


@pytest.fixture
async def client(rabbit: Rabbit) -> AsyncIterator[AsyncClient]:
    """UGC started with the settings of the moment (tests change them with monkeypatch.setenv)."""
    get_settings.cache_clear()
    async with serving(app) as client:
        yield client
    get_settings.cache_clear()
