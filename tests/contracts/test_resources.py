"""Shared plumbing: the Redis client queues callers beyond its pool size instead of failing
them; the app factory takes start-up objects out of the garbage collector's reach, collects young
objects less often, and leaves FastAPI's OpenTelemetry hooks off unless asked for."""

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI

from contracts.app import GC_YOUNG_THRESHOLD, create_app
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
    thresholds = gc.get_threshold()
    gc.set_threshold(700)
    try:
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
            # Everything alive at start-up (this loaded dict included) is in the permanent
            # generation, and young collections run less often than CPython's default.
            assert frozen > 1000
            assert not any(started[0] is obj for obj in gc.get_objects())
            assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > 700
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def test_fastapi_telemetry_hooks_are_off_unless_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    off = create_app(title="t", prefix="t")._telemetry
    assert (off["tracing"], off["metrics"], off["logs"]) == (False, False, False)
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    on = create_app(title="t", prefix="t")._telemetry
    assert (on["tracing"], on["metrics"], on["logs"]) == (True, True, True)
