"""The digest consumer on the real broker: picks published with trigger `digest`, bad input dead-lettered."""

import asyncio
import uuid
from typing import Any

import aio_pika
import pytest

from contracts.events import DigestRequested
from fastapi_recom import refresher
from fastapi_recom.config import get_settings
from fastapi_recom.recommender import RatingMatrix, Recommendation
from tests.recom.recommender_support import (
    generated_events,
    hand_made_set,
    is_ready,
    put_ratings,
    put_titles,
    recom_client,
)
from tests.support import RefusingRole, bearer, make_token, wait_for


async def _publish(body: bytes) -> None:
    import os

    connection = await aio_pika.connect_robust(os.environ["RABBITMQ_URL"])
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            "cinema.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=DigestRequested.routing_key,
            mandatory=True,
        )
    finally:
        await connection.close()


async def test_digest_request_publishes_picks_for_each_user() -> None:
    users, movies, ratings = hand_made_set()
    await put_ratings(ratings)
    stranger = uuid.uuid4()
    async with generated_events() as events, recom_client() as client:
        await wait_for(lambda: is_ready(client), timeout=15)
        await _publish(
            DigestRequested(user_ids=[users["A"], stranger], period="2026-W48")
            .model_dump_json()
            .encode()
        )

        async def published() -> bool:
            seen = {e["user_id"] for e in events if e["trigger"] == "digest"}
            return {str(users["A"]), str(stranger)} <= seen

        await wait_for(published, timeout=10)
    by_user = {e["user_id"]: e for e in events if e["trigger"] == "digest"}
    mine = by_user[str(users["A"])]
    assert mine["strategy"] == "user_knn_cosine"
    assert [i["movie_id"] for i in mine["items"][:3]] == [
        str(movies["m5"]),
        str(movies["m4"]),
        str(movies["m6"]),
    ]
    assert by_user[str(stranger)]["strategy"] == "popular"


async def test_a_digest_names_a_film_that_entered_the_catalogue_since_the_last_titles_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    users, movies, ratings = hand_made_set()
    await put_ratings(ratings, listed=False)
    await put_titles({movies["m4"]: "Four", movies["m6"]: "Six"})
    # Titles are polled once, at start, and not again during the test: until the digest reads
    # the catalogue afresh, m5 is not in it, so not picked.
    monkeypatch.setenv("RECOM_TITLES_INTERVAL", "3600")
    get_settings.cache_clear()
    try:
        async with generated_events() as events, recom_client() as client:
            await wait_for(lambda: is_ready(client), timeout=15)
            await put_titles({movies["m5"]: "Arrived Just Now"})
            await _publish(
                DigestRequested(user_ids=[users["A"]], period="2026-11-28")
                .model_dump_json()
                .encode()
            )

            async def published() -> bool:
                return any(e["trigger"] == "digest" for e in events)

            await wait_for(published, timeout=10)
    finally:
        get_settings.cache_clear()
    (digest,) = [e for e in events if e["trigger"] == "digest"]
    titles = {item["movie_id"]: item["title"] for item in digest["items"]}
    assert titles[str(movies["m5"])] == "Arrived Just Now"
    assert [item["movie_id"] for item in digest["items"]][:3] == [
        str(movies["m5"]),
        str(movies["m4"]),
        str(movies["m6"]),
    ]


async def test_malformed_digest_request_goes_to_the_dead_letter_queue() -> None:
    import os

    marker = uuid.uuid4().hex.encode()
    async with recom_client() as client:
        await wait_for(lambda: is_ready(client), timeout=15)
        await _publish(b'{"user_ids": "' + marker + b'"}')
        connection = await aio_pika.connect_robust(os.environ["RABBITMQ_URL"])
        try:
            channel = await connection.channel()
            dead = await channel.get_queue("recom.digests.dead", ensure=True)
            found: list[bytes] = []

            async def dead_lettered() -> bool:
                message = await dead.get(fail=False, no_ack=True)
                if message is not None:
                    found.append(message.body)
                return any(marker in body for body in found)

            await wait_for(dead_lettered, timeout=10)
        finally:
            await connection.close()


def _digests(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["trigger"] == "digest"]


async def test_redelivered_digest_request_publishes_each_viewer_under_the_same_event_id() -> None:
    users, _, ratings = hand_made_set()
    await put_ratings(ratings)
    viewers = [users["A"], users["B"], uuid.uuid4()]
    request = DigestRequested(user_ids=viewers, period="2026-W49").model_dump_json().encode()
    async with generated_events() as events, recom_client() as client:
        await wait_for(lambda: is_ready(client), timeout=15)
        # As a redelivery after a failed publish brings it: the very same message again.
        await _publish(request)
        await _publish(request)

        async def both_published() -> bool:
            return len(_digests(events)) == 2 * len(viewers)

        await wait_for(both_published, timeout=10)
    ids: dict[str, set[str]] = {}
    for event in _digests(events):
        ids.setdefault(event["user_id"], set()).add(event["event_id"])
    assert set(ids) == {str(v) for v in viewers}
    assert all(len(per_viewer) == 1 for per_viewer in ids.values())
    assert len(set.union(*ids.values())) == len(viewers)


async def test_digest_lets_other_work_on_the_event_loop_run_between_viewers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    users, _, ratings = hand_made_set()
    await put_ratings(ratings)
    viewers = [*users.values(), *(uuid.uuid4() for _ in range(5))]
    # Each pick asks the loop to run something else as soon as it can, as a waiting request
    # would: without a yield between viewers, all of it runs only after the last viewer.
    order: list[str] = []
    recommend = RatingMatrix.recommend

    def recommend_then_queue_other_work(
        self: RatingMatrix, *args: Any, **kwargs: Any
    ) -> Recommendation:
        order.append("recommend")
        asyncio.get_running_loop().call_soon(order.append, "other")
        return recommend(self, *args, **kwargs)

    async with generated_events() as events, recom_client() as client:
        await wait_for(lambda: is_ready(client), timeout=15)
        monkeypatch.setattr(RatingMatrix, "recommend", recommend_then_queue_other_work)
        await _publish(DigestRequested(user_ids=viewers).model_dump_json().encode())

        async def published() -> bool:
            return len(_digests(events)) == len(viewers)

        await wait_for(published, timeout=10)
    assert order.count("recommend") == len(viewers)
    assert order[order.index("recommend") :] == ["recommend", "other"] * len(viewers)


async def test_digest_handled_once_a_catalogue_read_that_failed_at_start_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL turns recom away right after the rating load (a restart, no free slot): the
    picks wait for the catalogue, never served without it, and readiness says so."""
    users, movies, ratings = hand_made_set()
    await put_ratings(ratings, listed=False)
    # m5, A's best pick, is not in the catalogue: only the catalogue read hides it.
    await put_titles({movies["m4"]: "Four", movies["m6"]: "Six"})
    settings = get_settings()
    load_matrix = refresher.load_matrix
    async with RefusingRole(settings.database_url) as role:

        async def load_then_refuse(*args: Any, **kwargs: Any) -> Any:
            loaded = await load_matrix(*args, **kwargs)
            await role.refuse()
            return loaded

        monkeypatch.setattr(refresher, "load_matrix", load_then_refuse)
        monkeypatch.setenv("POSTGRES_USER", role.name)
        monkeypatch.setenv("CONTENT_DATABASE_URL", settings.content_dsn)  # the ETL's source
        get_settings.cache_clear()
        try:
            async with generated_events() as events, recom_client() as client:
                # Start-up is over, so the first catalogue read has been tried, and failed.
                ready = await client.get("/recom/ready")
                assert ready.status_code == 503
                assert ready.json()["checks"]["recommender"] != "ok"
                picks = await client.get(
                    f"/recom/v1/user/{users['A']}?limit=3", headers=bearer(make_token(users["A"]))
                )
                assert picks.status_code == 503

                await role.admit()
                await wait_for(lambda: is_ready(client), timeout=15)
                await _publish(
                    DigestRequested(user_ids=[users["A"]], period="2026-11-29")
                    .model_dump_json()
                    .encode()
                )

                async def published() -> bool:
                    return bool(_digests(events))

                await wait_for(published, timeout=8)
        finally:
            get_settings.cache_clear()
    (digest,) = _digests(events)
    assert [(i["movie_id"], i["title"]) for i in digest["items"]][:2] == [
        (str(movies["m4"]), "Four"),
        (str(movies["m6"]), "Six"),
    ]
    assert str(movies["m5"]) not in {i["movie_id"] for i in digest["items"]}
