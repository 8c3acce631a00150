"""The pipeline through failures: broker and database outages, kill -9 of the consumer."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from contracts.events import RatingSubmitted
from fastapi_recom.config import get_settings as recom_settings
from fastapi_recom.main import app as recom_app
from fastapi_ugc.config import get_settings as ugc_settings
from fastapi_ugc.main import app as ugc_app
from tests.ratings_pipeline import (
    DEAD_QUEUE,
    RATINGS_QUEUE,
    Rabbit,
    count_ratings,
    empty_ratings_queues,
    stored_ratings,
)
from tests.recom.test_ingest import Pair, rating, settle, state_of, wait_stored
from tests.support import (
    DATABASE_OUTAGES,
    DatabaseOutage,
    ServiceProcess,
    TcpProxy,
    bearer,
    database_outage,
    make_token,
    wait_for,
)


@pytest.fixture
async def rabbit() -> AsyncIterator[Rabbit]:
    async with empty_ratings_queues() as rabbit:
        yield rabbit


async def ready(client: AsyncClient, prefix: str) -> bool:
    return (await client.get(f"/{prefix}/ready")).status_code == 200


async def unready(client: AsyncClient, prefix: str) -> bool:
    return (await client.get(f"/{prefix}/ready")).status_code == 503


@pytest.fixture
async def recom(rabbit: Rabbit) -> AsyncIterator[AsyncClient]:
    """fastapi_recom in-process with the environment of the moment (proxies included)."""
    recom_settings.cache_clear()
    async with (
        LifespanManager(recom_app, startup_timeout=30, shutdown_timeout=30) as manager,
        AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://test") as client,
    ):
        await wait_for(lambda: ready(client, "recom"), timeout=20)
        yield client
    recom_settings.cache_clear()


@pytest.fixture
async def ugc(rabbit: Rabbit) -> AsyncIterator[AsyncClient]:
    ugc_settings.cache_clear()
    async with (
        LifespanManager(ugc_app, startup_timeout=30) as manager,
        # A hang would end in this timeout and fail the test: UGC must answer within seconds.
        AsyncClient(
            transport=ASGITransport(app=manager.app), base_url="http://test", timeout=10
        ) as client,
    ):
        await wait_for(lambda: ready(client, "ugc"), timeout=20)
        yield client
    ugc_settings.cache_clear()


def ratings_of(user_id: uuid.UUID, count: int) -> list[RatingSubmitted]:
    at = datetime.now(UTC)
    return [rating(user_id, uuid.uuid4(), i % 10 + 1, at) for i in range(count)]


async def test_consumer_resumes_after_broker_outage_and_ready_reports_it(
    broker_proxy: TcpProxy, recom: AsyncClient, rabbit: Rabbit
) -> None:
    await broker_proxy.cut()
    await wait_for(lambda: unready(recom, "recom"), timeout=10)
    checks = (await recom.get("/recom/ready")).json()["checks"]
    assert checks["broker"] != "ok"
    assert checks["ratings_consumer"] == "unavailable: not consuming"
    events = ratings_of(uuid.uuid4(), 50)
    await rabbit.publish_events(events)

    await broker_proxy.restore()

    await wait_stored({(e.user_id, e.movie_id): state_of(e) for e in events}, timeout=30)
    await wait_for(lambda: ready(recom, "recom"), timeout=10)
    assert await rabbit.depth(DEAD_QUEUE) == 0


@pytest.fixture(params=DATABASE_OUTAGES)
async def outage(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[DatabaseOutage]:
    settings = recom_settings()
    async with database_outage(request.param, settings.database_url) as outage:
        monkeypatch.setenv("CONTENT_DATABASE_URL", settings.content_dsn)  # the ETL's source
        for name, value in outage.settings.items():
            monkeypatch.setenv(name.upper(), value)
        yield outage


async def test_consumer_holds_events_through_database_outage(
    outage: DatabaseOutage, recom: AsyncClient, rabbit: Rabbit
) -> None:
    await outage.begin()
    await wait_for(lambda: unready(recom, "recom"), timeout=10)
    assert (await recom.get("/recom/ready")).json()["checks"]["postgres"] != "ok"
    events = ratings_of(uuid.uuid4(), 50)
    await rabbit.publish_events(events)
    # Long enough for several failed writes: they must not use up the delivery limit.
    await asyncio.sleep(2)

    await outage.end()

    await wait_stored({(e.user_id, e.movie_id): state_of(e) for e in events}, timeout=30)
    await wait_for(lambda: ready(recom, "recom"), timeout=10)
    assert await rabbit.depth(DEAD_QUEUE) == 0


@pytest.fixture
def short_publish_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLISH_TIMEOUT", "1")


@pytest.mark.usefixtures("short_publish_timeout")
async def test_posts_during_broker_outage_get_202_or_503_and_every_202_is_stored(
    broker_proxy: TcpProxy, ugc: AsyncClient, recom: AsyncClient, rabbit: Rabbit
) -> None:
    """UGC and recom both reach RabbitMQ through the proxy; viewers keep posting across a cut
    longer than UGC's publish timeout."""
    answers: list[tuple[Pair, int, httpx.Response]] = []
    accepted_after_restore: list[Pair] = []
    restored = asyncio.Event()
    stop = asyncio.Event()

    async def viewer(user_id: uuid.UUID) -> None:
        headers = bearer(make_token(user_id))
        while not stop.is_set():
            movie_id, score = uuid.uuid4(), len(answers) % 10 + 1
            response = await ugc.post(
                "/ugc/v1/ratings", json={"movie_id": str(movie_id), "score": score}, headers=headers
            )
            answers.append(((user_id, movie_id), score, response))
            if response.status_code == 202 and restored.is_set():
                accepted_after_restore.append((user_id, movie_id))
            elif response.status_code != 202:
                await asyncio.sleep(0.2)

    async def outage() -> None:
        await asyncio.sleep(1)
        await broker_proxy.cut()
        await asyncio.sleep(2)
        await broker_proxy.restore()
        restored.set()

        async def accepting_again() -> bool:
            return len(accepted_after_restore) >= 20

        await wait_for(accepting_again, timeout=30)
        stop.set()

    await asyncio.gather(outage(), *(viewer(uuid.uuid4()) for _ in range(16)))

    assert {response.status_code for _, _, response in answers} == {202, 503}
    refusals = [response for _, _, response in answers if response.status_code == 503]
    assert {"detail": "BROKER_UNAVAILABLE"} in [response.json() for response in refusals]
    for response in refusals:
        # On a loaded machine Redis (token revocation) may time out too: still a 503 to retry.
        assert response.json()["detail"] in {"BROKER_UNAVAILABLE", "AUTH_BACKEND_UNAVAILABLE"}
        assert response.headers["Retry-After"] == "2"
    accepted = {pair: score for pair, score, response in answers if response.status_code == 202}
    users = {user_id for user_id, _ in accepted}

    async def all_stored() -> bool:
        stored = await stored_ratings(users)
        return all(stored.get(pair, (None,))[0] == score for pair, score in accepted.items())

    await wait_for(all_stored, timeout=30, interval=0.2)
    assert await rabbit.depth(DEAD_QUEUE) == 0


@pytest.mark.slow
async def test_kill_9_of_consumer_twice_loses_and_duplicates_nothing(rabbit: Rabbit) -> None:
    users = [uuid.uuid4() for _ in range(100)]
    at = datetime.now(UTC)
    events = [
        rating(u, uuid.uuid4(), (i + j) % 10 + 1, at)
        for i, u in enumerate(users)
        for j in range(100)
    ]
    expected = {(e.user_id, e.movie_id): state_of(e) for e in events}
    recom = ServiceProcess("fastapi_recom.main:app", "recom")
    await recom.start(ready_timeout=90)
    try:
        publishing = asyncio.create_task(rabbit.publish_events(events, concurrency=500))
        for threshold in (2_500, 6_000):

            async def reached(threshold: int = threshold) -> bool:
                return await count_ratings(users) >= threshold

            await wait_for(reached, timeout=60, interval=0.25)
            recom.kill()
            # Generous: on a loaded 2-core machine the imports alone take seconds.
            await recom.start(ready_timeout=90)
        await publishing

        async def all_stored() -> bool:
            return await count_ratings(users) == 10_000

        await wait_for(all_stored, timeout=60, interval=0.25)
        await settle(rabbit)
    finally:
        recom.stop()

    stored = await stored_ratings(users)
    assert len(stored) == 10_000
    assert stored == expected
    assert await rabbit.depth(RATINGS_QUEUE) == 0
    assert await rabbit.depth(DEAD_QUEUE) == 0
