"""Shared plumbing: the Redis client queues callers beyond its pool size instead of failing
them; the app factory takes start-up objects out of the garbage collector's reach."""

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from contracts.app import create_app
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


async def test_objects_alive_after_start_are_frozen_out_of_the_collector() -> None:
    started: list[object] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started.append({"loaded": list(range(10))})
        yield

    app = create_app(title="t", prefix="t", lifespan=lifespan)
    gc.unfreeze()
    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()
        # Everything alive at start-up (this loaded dict included) is in the permanent generation.
        assert frozen > 1000
        assert not any(started[0] is obj for obj in gc.get_objects())
    gc.unfreeze()
