"""The shared Redis client queues callers beyond its pool size instead of failing them."""

import asyncio
import os

from contracts.resources import make_redis
from contracts.settings import ServiceSettings


async def test_redis_pool_makes_callers_wait_beyond_its_size() -> None:
    settings = ServiceSettings(redis_url=os.environ["REDIS_URL"], redis_max_connections=3)
    redis = make_redis(settings)
    try:
        # Thirty callers at once on three connections: every one is served (the default pool
        # would raise "Too many connections" for the 27 beyond its size).
        results = await asyncio.gather(*(redis.ping() for _ in range(30)))
        assert results == [True] * 30
    finally:
        await redis.aclose(close_connection_pool=True)
