"""fastapi_ugc in-process against the real broker, with the ratings queue emptied per test."""

from collections.abc import AsyncIterator

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from fastapi_ugc.config import get_settings
from fastapi_ugc.main import app
from tests.ratings_pipeline import Rabbit, empty_ratings_queues
from tests.support import wait_for


@pytest.fixture
async def rabbit() -> AsyncIterator[Rabbit]:
    async with empty_ratings_queues() as rabbit:
        yield rabbit


@pytest.fixture
async def client(rabbit: Rabbit) -> AsyncIterator[AsyncClient]:
    """UGC started with the settings of the moment (tests change them with monkeypatch.setenv)."""
    get_settings.cache_clear()
    async with (
        LifespanManager(app, startup_timeout=30) as manager,
        AsyncClient(
            transport=ASGITransport(app=manager.app), base_url="http://test", timeout=15
        ) as client,
    ):

        async def broker_up() -> bool:
            return (await client.get("/ugc/ready")).json()["checks"]["broker"] == "ok"

        await wait_for(broker_up, timeout=15)
        yield client
    get_settings.cache_clear()
