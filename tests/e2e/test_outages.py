"""RabbitMQ or PostgreSQL gone for a few seconds: 503s meanwhile, recovery by itself, nothing lost."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.e2e.conftest import APPS, Suite
from tests.support import bearer, make_token, wait_for

pytestmark = pytest.mark.e2e

OUTAGE_SECONDS = 4


async def all_ready(client: httpx.AsyncClient) -> bool:
    for prefix in APPS:
        if (await client.get(f"/{prefix}/ready")).status_code != 200:
            return False
    return True


async def stored_scores(
    client: httpx.AsyncClient, user_id: uuid.UUID, token: str
) -> dict[str, int]:
    held = await client.get(f"/recom/v1/user/{user_id}/ratings?size=100", headers=bearer(token))
    assert held.status_code == 200, held.text
    return {item["movie_id"]: item["score"] for item in held.json()["items"]}


async def rate(
    client: httpx.AsyncClient, token: str, movie_id: uuid.UUID, score: int
) -> httpx.Response:
    return await client.post(
        "/ugc/v1/ratings", json={"movie_id": str(movie_id), "score": score}, headers=bearer(token)
    )


async def test_broker_outage_answers_503_then_recovers_without_loss(suite: Suite) -> None:
    user_id = uuid.uuid4()
    token = make_token(user_id, email="outage@example.com")
    accepted: dict[str, int] = {}
    async with suite.client() as client:
        await wait_for(lambda: all_ready(client), timeout=60, interval=0.5)
        before = uuid.uuid4()
        assert (await rate(client, token, before, 7)).status_code == 202
        accepted[str(before)] = 7

        suite.rabbitmq.cut()
        try:
            started = time.monotonic()
            during = await rate(client, token, uuid.uuid4(), 5)
            assert during.status_code == 503
            assert during.json()["detail"] in {"BROKER_UNAVAILABLE", "SERVICE_UNAVAILABLE"}
            assert "Retry-After" in during.headers
            assert time.monotonic() - started < 10
            assert (await client.get("/ugc/ready")).status_code == 503
            assert (await client.get("/recom/ready")).status_code == 503
            # What needs only PostgreSQL keeps working.
            assert (await client.get("/recom/v1/movies")).status_code == 200
            time.sleep(OUTAGE_SECONDS)
        finally:
            suite.rabbitmq.restore()

        await wait_for(lambda: all_ready(client), timeout=90, interval=0.5)
        after = uuid.uuid4()

        async def accepted_again() -> bool:
            return (await rate(client, token, after, 9)).status_code == 202

        await wait_for(accepted_again, timeout=30, interval=0.5)
        accepted[str(after)] = 9

        async def all_stored() -> bool:
            return await stored_scores(client, user_id, token) == accepted

        await wait_for(all_stored, timeout=60, interval=0.5)


async def test_database_outage_answers_503_then_recovers_without_loss(suite: Suite) -> None:
    user_id = uuid.uuid4()
    token = make_token(user_id, email="outage-db@example.com")
    async with suite.client() as client:
        await wait_for(lambda: all_ready(client), timeout=60, interval=0.5)
        movie_id = uuid.uuid4()
        suite.postgres.cut()
        try:
            catalogue = await client.get("/recom/v1/movies")
            assert catalogue.status_code == 503
            assert catalogue.json() == {"detail": "SERVICE_UNAVAILABLE"}
            # Picks come from the recommender's in-memory matrix, so they keep being served.
            picks = await client.get(f"/recom/v1/user/{user_id}", headers=bearer(token))
            assert picks.status_code == 200
            login = await client.post(
                "/auth/v1/jwt/login", data={"username": "nobody@example.com", "password": "x" * 12}
            )
            assert login.status_code == 503
            assert (await client.get("/recom/ready")).status_code == 503
            assert (await client.get("/auth/ready")).status_code == 503
            # UGC needs no database: the rating is accepted and waits in the queue.
            assert (await rate(client, token, movie_id, 8)).status_code == 202
            time.sleep(OUTAGE_SECONDS)
        finally:
            suite.postgres.restore()

        await wait_for(lambda: all_ready(client), timeout=90, interval=0.5)

        async def stored() -> bool:
            return await stored_scores(client, user_id, token) == {str(movie_id): 8}

        await wait_for(stored, timeout=60, interval=0.5)
