"""Fixtures of the shared-contract tests: settings and a Redis client on the suite's database."""

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from fastapi_auth.config import Settings


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()
