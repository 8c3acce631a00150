"""The digest consumer on the real broker: picks published with trigger `digest`, bad input dead-lettered."""

import uuid

import aio_pika
import pytest

from contracts.events import DigestRequested
from fastapi_recom.config import get_settings
from tests.recom.recommender_support import (
    generated_events,
    hand_made_set,
    is_ready,
    put_ratings,
    put_titles,
    recom_client,
)
from tests.support import wait_for


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
