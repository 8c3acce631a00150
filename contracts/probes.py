"""Readiness checks for the dependencies the services share."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def check_postgres(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def check_redis(redis: Redis) -> None:
    await redis.ping()


async def check_broker(broker: RabbitBroker) -> str | None:
    return None if await broker.ping(timeout=1.0) else "unavailable: broker"
