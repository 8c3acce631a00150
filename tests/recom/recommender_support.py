"""Helpers of the recommender's tests: ratings written straight into `rating`, an in-process app."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from fastapi_recom.config import Settings

Rating = tuple[uuid.UUID, uuid.UUID, int]


def dsn() -> str:
    return Settings().database_url.replace("postgresql+asyncpg://", "postgresql://")


@asynccontextmanager
async def connect() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn())
    try:
        yield conn
    finally:
        await conn.close()


async def put_ratings(
    ratings: Iterable[Rating], *, conn: asyncpg.Connection | None = None, listed: bool = True
) -> None:
    """Upsert as the ratings consumer does: the newest state, `updated_at` stamped by the server.
    On `conn` when given (inside the caller's transaction), else on a connection of its own.

    Once the catalogue lists any film, recom picks only films it lists, so the rated films are
    listed too (titled `listed_title`) unless `listed` is false."""
    ratings = list(ratings)
    if conn is None:
        async with connect() as own:
            await put_ratings(ratings, conn=own, listed=listed)
        return
    await conn.executemany(
        """
        INSERT INTO rating (user_id, movie_id, score, rated_at, deleted)
        VALUES ($1, $2, $3, $4, false)
        ON CONFLICT (user_id, movie_id) DO UPDATE
        SET score = excluded.score, rated_at = excluded.rated_at, deleted = false,
            updated_at = clock_timestamp()
        """,
        [(u, m, s, datetime.now(UTC)) for u, m, s in ratings],
    )
    if listed:
        await conn.executemany(
            "INSERT INTO movie (movie_id, title) VALUES ($1, $2) ON CONFLICT (movie_id) DO NOTHING",
            [(m, listed_title(m)) for m in dict.fromkeys(m for _, m, _ in ratings)],
        )


def listed_title(movie_id: uuid.UUID) -> str:
    return f"Film {movie_id.hex[:8]}"


async def delete_rating(user_id: uuid.UUID, movie_id: uuid.UUID) -> None:
    async with connect() as conn:
        await conn.execute(
            "UPDATE rating SET deleted = true, updated_at = clock_timestamp() "
            "WHERE user_id = $1 AND movie_id = $2",
            user_id,
            movie_id,
        )


async def put_titles(titles: dict[uuid.UUID, str]) -> None:
    async with connect() as conn:
        await conn.executemany(
            "INSERT INTO movie (movie_id, title) VALUES ($1, $2) "
            "ON CONFLICT (movie_id) DO UPDATE SET title = excluded.title, "
            "updated_at = clock_timestamp()",
            list(titles.items()),
        )


async def clear_ratings() -> None:
    """Popular lists are global: tests that check them start from an empty table."""
    async with connect() as conn:
        await conn.execute("TRUNCATE rating")


@asynccontextmanager
async def recom_client() -> AsyncIterator[AsyncClient]:
    from fastapi_recom.main import app

    async with (
        LifespanManager(app, startup_timeout=30) as manager,
        AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://test") as client,
    ):
        yield client


def hand_made_set() -> tuple[dict[str, uuid.UUID], dict[str, uuid.UUID], list[Rating]]:
    """Fresh ids for the set of test_recommender.py: A's picks are m5, m4, m6 in that order."""
    users = {name: uuid.uuid4() for name in "ABCDE"}
    movies = {f"m{i}": uuid.uuid4() for i in range(1, 7)}
    plan = [
        ("A", "m1", 8), ("A", "m2", 6), ("A", "m3", 10),
        ("B", "m1", 8), ("B", "m2", 6), ("B", "m3", 10), ("B", "m4", 8),
        ("D", "m2", 4), ("D", "m3", 8), ("D", "m5", 6), ("D", "m6", 4),
        ("C", "m1", 6), ("C", "m5", 10),
        ("E", "m6", 2),
    ]  # fmt: skip
    return users, movies, [(users[u], movies[m], s) for u, m, s in plan]


@asynccontextmanager
async def generated_events() -> AsyncIterator[list[dict[str, Any]]]:
    """Collects `recom.recommendations.generated` from a private queue bound in the test vhost."""
    import json
    import os

    import aio_pika

    received: list[dict[str, Any]] = []
    connection = await aio_pika.connect_robust(os.environ["RABBITMQ_URL"])
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "cinema.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="recom.recommendations.generated")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                received.append(json.loads(message.body))

        await queue.consume(on_message)
        yield received
    finally:
        await connection.close()


async def is_ready(client: AsyncClient) -> bool:
    return (await client.get("/recom/ready")).status_code == 200
