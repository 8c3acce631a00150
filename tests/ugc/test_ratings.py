"""The ratings API: 202 only after RabbitMQ confirmed, stable 4xx codes, nothing published on bad input."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import ANY

import aio_pika
import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

from contracts.events import RatingDeleted, RatingSubmitted
from contracts.tokens import CONFIRMED_KEY, record_confirmation
from fastapi_recom.consumers import RATINGS_QUEUE
from fastapi_ugc.config import Settings
from tests.ratings_pipeline import Rabbit, declare_ratings_topology
from tests.support import bearer, make_token

RATINGS = "/ugc/v1/ratings"


def rate(movie_id: object, score: object = 7) -> dict[str, object]:
    return {"movie_id": str(movie_id), "score": score}


async def test_submit_rating_publishes_persistent_event_with_user_from_token(
    client: AsyncClient, rabbit: Rabbit
) -> None:
    user_id, movie_id = uuid.uuid4(), uuid.uuid4()
    before = datetime.now(UTC)

    response = await client.post(
        RATINGS, json=rate(movie_id, 7), headers=bearer(make_token(user_id))
    )

    assert response.status_code == 202
    body = response.json()
    assert body == {"event_id": ANY, "movie_id": str(movie_id), "score": 7, "occurred_at": ANY}
    [message] = await rabbit.take_all(RATINGS_QUEUE)
    assert message.routing_key == "ugc.rating.submitted"
    assert message.message_id == body["event_id"]
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    assert message.type == "ugc.rating.submitted"
    event = RatingSubmitted.model_validate_json(message.body)
    assert (event.user_id, event.movie_id, event.score) == (user_id, movie_id, 7)
    assert str(event.event_id) == body["event_id"]
    assert event.occurred_at == datetime.fromisoformat(body["occurred_at"])
    # Written as the event is: UTC with a Z, to the microsecond.
    assert body["occurred_at"] == event.model_dump(mode="json")["occurred_at"]
    assert body["occurred_at"].endswith("Z")
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert before <= event.occurred_at <= datetime.now(UTC)


async def test_delete_rating_publishes_deletion_event(client: AsyncClient, rabbit: Rabbit) -> None:
    user_id, movie_id = uuid.uuid4(), uuid.uuid4()

    response = await client.delete(f"{RATINGS}/{movie_id}", headers=bearer(make_token(user_id)))

    assert response.status_code == 202
    body = response.json()
    assert body == {"event_id": ANY, "movie_id": str(movie_id), "occurred_at": ANY}
    [message] = await rabbit.take_all(RATINGS_QUEUE)
    assert message.routing_key == "ugc.rating.deleted"
    event = RatingDeleted.model_validate_json(message.body)
    assert (event.user_id, event.movie_id, str(event.event_id)) == (
        user_id,
        movie_id,
        body["event_id"],
    )


MOVIE = str(uuid.uuid4())


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(rate(MOVIE, 0), id="score-0"),
        pytest.param(rate(MOVIE, 11), id="score-11"),
        pytest.param(rate(MOVIE, -3), id="score-negative"),
        pytest.param(rate(MOVIE, "7"), id="score-string"),
        pytest.param(rate(MOVIE, 7.5), id="score-float"),
        pytest.param(rate(MOVIE, True), id="score-bool"),
        pytest.param(rate(MOVIE, None), id="score-null"),
        pytest.param({"movie_id": MOVIE}, id="score-missing"),
        pytest.param({"score": 7}, id="movie-missing"),
        pytest.param(rate("not-a-uuid"), id="movie-not-uuid"),
        pytest.param(rate(12345), id="movie-number"),
        pytest.param({**rate(MOVIE), "user_id": str(uuid.uuid4())}, id="user-id-in-body"),
        pytest.param([rate(MOVIE)], id="list"),
    ],
)
async def test_submit_rating_refuses_bad_body_without_publishing(
    client: AsyncClient, rabbit: Rabbit, body: Any
) -> None:
    response = await client.post(RATINGS, json=body, headers=bearer(make_token()))

    assert response.status_code == 422
    assert response.json()["detail"] == "VALIDATION_ERROR"
    assert await rabbit.take_all(RATINGS_QUEUE) == []


async def test_submit_rating_names_the_body_field_that_failed(
    client: AsyncClient, rabbit: Rabbit
) -> None:
    response = await client.post(RATINGS, json=rate(MOVIE, 11), headers=bearer(make_token()))
    empty = await client.post(RATINGS, content=b"", headers=bearer(make_token()))

    assert (response.status_code, response.json()["detail"]) == (422, "VALIDATION_ERROR")
    assert [e["loc"] for e in response.json()["errors"]] == [["body", "score"]]
    assert (empty.status_code, empty.json()["detail"]) == (422, "VALIDATION_ERROR")
    assert await rabbit.take_all(RATINGS_QUEUE) == []


async def test_submit_rating_refuses_body_that_is_not_json(
    client: AsyncClient, rabbit: Rabbit
) -> None:
    response = await client.post(
        RATINGS,
        content=b"{movie_id: nope",
        headers={**bearer(make_token()), "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["detail"] == "VALIDATION_ERROR"
    assert await rabbit.take_all(RATINGS_QUEUE) == []


async def test_delete_rating_refuses_movie_id_that_is_not_uuid(
    client: AsyncClient, rabbit: Rabbit
) -> None:
    response = await client.delete(f"{RATINGS}/42", headers=bearer(make_token()))

    assert response.status_code == 422
    assert response.json()["detail"] == "VALIDATION_ERROR"
    assert response.json()["errors"][0]["loc"] == ["path", "movie_id"]
    assert await rabbit.take_all(RATINGS_QUEUE) == []


async def test_submit_rating_refuses_idempotency_key_that_is_not_uuid(
    client: AsyncClient, rabbit: Rabbit
) -> None:
    response = await client.post(
        RATINGS,
        json=rate(uuid.uuid4()),
        headers={**bearer(make_token()), "Idempotency-Key": "retry-1"},
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await rabbit.take_all(RATINGS_QUEUE) == []


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, "NOT_AUTHENTICATED", id="missing"),
        pytest.param({"Authorization": "Bearer not.a.jwt"}, "TOKEN_INVALID", id="garbage"),
        pytest.param(
            bearer(make_token(lifetime=timedelta(seconds=-1))), "TOKEN_EXPIRED", id="expired"
        ),
        pytest.param(bearer(make_token(audience="other")), "TOKEN_INVALID", id="audience"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, "NOT_AUTHENTICATED", id="basic"),
    ],
)
async def test_rating_without_valid_token_is_refused_without_publishing(
    client: AsyncClient, rabbit: Rabbit, headers: dict[str, str], code: str
) -> None:
    posted = await client.post(RATINGS, json=rate(uuid.uuid4()), headers=headers)
    deleted = await client.delete(f"{RATINGS}/{uuid.uuid4()}", headers=headers)

    assert (posted.status_code, posted.json()) == (401, {"detail": code})
    assert (deleted.status_code, deleted.json()) == (401, {"detail": code})
    assert await rabbit.take_all(RATINGS_QUEUE) == []


async def test_rating_by_unverified_user_is_refused(client: AsyncClient, rabbit: Rabbit) -> None:
    token = make_token(verified=False)

    posted = await client.post(RATINGS, json=rate(uuid.uuid4()), headers=bearer(token))
    deleted = await client.delete(f"{RATINGS}/{uuid.uuid4()}", headers=bearer(token))

    assert (posted.status_code, posted.json()) == (403, {"detail": "USER_NOT_VERIFIED"})
    assert (deleted.status_code, deleted.json()) == (403, {"detail": "USER_NOT_VERIFIED"})
    assert await rabbit.take_all(RATINGS_QUEUE) == []


async def test_a_token_issued_before_the_viewer_confirmed_may_rate_once_auth_noted_it(
    client: AsyncClient, rabbit: Rabbit
) -> None:
    user_id = uuid.uuid4()
    token = make_token(user_id, verified=False)
    refused = await client.post(RATINGS, json=rate(uuid.uuid4()), headers=bearer(token))
    assert (refused.status_code, refused.json()) == (403, {"detail": "USER_NOT_VERIFIED"})

    redis = Redis.from_url(Settings().redis_url)
    try:
        # What fastapi_auth writes when the viewer opens the confirmation link.
        await record_confirmation(redis, user_id, confirmed=True, keep_seconds=60)
        posted = await client.post(RATINGS, json=rate(uuid.uuid4()), headers=bearer(token))
    finally:
        await redis.delete(CONFIRMED_KEY.format(user_id=user_id))
        await redis.aclose()

    assert posted.status_code == 202, posted.text
    (published,) = await rabbit.take_all(RATINGS_QUEUE)
    assert RatingSubmitted.model_validate_json(published.body).user_id == user_id


@pytest.fixture
def allow_unverified(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATINGS_ALLOW_UNVERIFIED", "true")


@pytest.mark.usefixtures("allow_unverified")
async def test_rating_by_unverified_user_is_accepted_when_setting_allows(
    client: AsyncClient, rabbit: Rabbit
) -> None:
    response = await client.post(
        RATINGS, json=rate(uuid.uuid4()), headers=bearer(make_token(verified=False))
    )

    assert response.status_code == 202
    assert len(await rabbit.take_all(RATINGS_QUEUE)) == 1


async def test_retry_with_same_idempotency_key_republishes_the_same_event(
    client: AsyncClient, rabbit: Rabbit
) -> None:
    key = uuid.uuid4()
    headers = {**bearer(make_token()), "Idempotency-Key": str(key)}
    body = rate(uuid.uuid4(), 9)

    first = await client.post(RATINGS, json=body, headers=headers)
    retry = await client.post(RATINGS, json=body, headers=headers)

    assert first.status_code == retry.status_code == 202
    assert first.json() == retry.json()
    assert first.json()["event_id"] == str(key)
    messages = await rabbit.take_all(RATINGS_QUEUE)
    # At least once: the retry is published again, identical, so recom's upsert ignores it.
    assert [m.message_id for m in messages] == [str(key), str(key)]
    assert messages[0].body == messages[1].body


async def test_idempotency_key_reused_for_another_rating_is_refused(
    client: AsyncClient, rabbit: Rabbit
) -> None:
    headers = {**bearer(make_token()), "Idempotency-Key": str(uuid.uuid4())}
    movie_id = uuid.uuid4()

    first = await client.post(RATINGS, json=rate(movie_id, 9), headers=headers)
    other_score = await client.post(RATINGS, json=rate(movie_id, 3), headers=headers)
    other_kind = await client.delete(f"{RATINGS}/{movie_id}", headers=headers)

    assert first.status_code == 202
    assert (other_score.status_code, other_score.json()) == (
        422,
        {"detail": "IDEMPOTENCY_KEY_REUSED"},
    )
    assert (other_kind.status_code, other_kind.json()) == (
        422,
        {"detail": "IDEMPOTENCY_KEY_REUSED"},
    )
    assert len(await rabbit.take_all(RATINGS_QUEUE)) == 1


async def test_rating_nobody_consumes_is_refused_as_unroutable(
    client: AsyncClient, rabbit: Rabbit
) -> None:
    await rabbit.channel.queue_delete(RATINGS_QUEUE)
    try:
        response = await client.post(RATINGS, json=rate(uuid.uuid4()), headers=bearer(make_token()))
    finally:
        await declare_ratings_topology()

    assert (response.status_code, response.json()) == (503, {"detail": "BROKER_UNAVAILABLE"})
    assert response.headers["Retry-After"] == "2"
