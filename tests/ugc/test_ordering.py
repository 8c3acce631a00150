"""A viewer's changes of a rating are stamped in the order UGC accepted them, whatever the
replicas' own clocks say: recom keeps the change with the newest `occurred_at`."""

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import pairwise
from typing import NamedTuple
from unittest.mock import patch

import pytest
from httpx import AsyncClient, Response
from redis.asyncio import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

from contracts.events import RatingDeleted, RatingSubmitted
from fastapi_recom.consumers import RATINGS_QUEUE
from fastapi_ugc.clock import CLOCK_KEY, EPOCH
from fastapi_ugc.config import Settings, get_settings
from fastapi_ugc.events import RatingEvent
from fastapi_ugc.main import build_app
from tests.ratings_pipeline import Rabbit
from tests.support import bearer, make_token
from tests.ugc.conftest import serving

RATINGS = "/ugc/v1/ratings"


@contextmanager
def wall_clock_off_by(offset: timedelta) -> Iterator[None]:
    """`datetime.now` off by `offset` in UGC and the event models, as on a replica whose
    clock runs fast or was stepped back."""

    class Skewed(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return datetime.now(tz) + offset  # type: ignore[arg-type]

    readers = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("fastapi_ugc") or name == "contracts.events"
    ]
    with ExitStack() as stack:
        for module in readers:
            if getattr(module, "datetime", None) is datetime:
                stack.enter_context(patch.object(module, "datetime", Skewed))
        yield


class ClockOff:
    """A replica whose wall clock is `offset` from the true time while it serves a request
    (the tests send one request at a time)."""

    def __init__(self, app: ASGIApp, *, offset: timedelta) -> None:
        self.app = app
        self.offset = offset

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with wall_clock_off_by(self.offset):
            await self.app(scope, receive, send)


class Replicas(NamedTuple):
    fast: AsyncClient  # its clock runs 2 s fast
    right: AsyncClient


@pytest.fixture
async def replicas(rabbit: Rabbit) -> AsyncIterator[Replicas]:
    """Two UGC replicas sharing Redis and RabbitMQ, whose clocks disagree."""
    get_settings.cache_clear()
    async with (
        serving(build_app(), wrap=partial(ClockOff, offset=timedelta(seconds=2))) as fast,
        serving(build_app()) as right,
    ):
        yield Replicas(fast, right)
    get_settings.cache_clear()


def rate(movie_id: uuid.UUID, score: int) -> dict[str, object]:
    return {"movie_id": str(movie_id), "score": score}


def stamp(response: Response) -> datetime:
    assert response.status_code == 202, response.text
    return datetime.fromisoformat(response.json()["occurred_at"])


async def published(rabbit: Rabbit) -> list[tuple[str, RatingEvent]]:
    """(routing key, event) of every rating event published, in the queue's order."""
    events = []
    for message in await rabbit.take_all(RATINGS_QUEUE):
        kind = (
            RatingDeleted if message.routing_key == RatingDeleted.routing_key else RatingSubmitted
        )
        events.append((str(message.routing_key), kind.model_validate_json(message.body)))
    return events


async def test_changes_taken_by_replicas_whose_clocks_disagree_are_stamped_in_acceptance_order(
    replicas: Replicas, rabbit: Rabbit
) -> None:
    movie_id = uuid.uuid4()
    headers = bearer(make_token())

    accepted = [
        await replicas.fast.post(RATINGS, json=rate(movie_id, 9), headers=headers),
        await replicas.right.delete(f"{RATINGS}/{movie_id}", headers=headers),
        await replicas.fast.post(RATINGS, json=rate(movie_id, 4), headers=headers),
        await replicas.right.post(RATINGS, json=rate(movie_id, 6), headers=headers),
    ]

    stamps = [stamp(response) for response in accepted]
    assert all(earlier < later for earlier, later in pairwise(stamps)), stamps
    events = await published(rabbit)
    assert [(key, event.occurred_at) for key, event in events] == [
        ("ugc.rating.submitted", stamps[0]),
        ("ugc.rating.deleted", stamps[1]),
        ("ugc.rating.submitted", stamps[2]),
        ("ugc.rating.submitted", stamps[3]),
    ]


async def test_a_retry_keeps_its_first_stamp_older_than_a_change_accepted_after_it(
    replicas: Replicas, rabbit: Rabbit
) -> None:
    movie_id = uuid.uuid4()
    headers = bearer(make_token())
    retried = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    body = rate(movie_id, 9)

    first = await replicas.fast.post(RATINGS, json=body, headers=retried)
    later = await replicas.right.post(RATINGS, json=rate(movie_id, 3), headers=headers)
    retry = await replicas.right.post(RATINGS, json=body, headers=retried)

    assert retry.json() == first.json()
    assert stamp(first) < stamp(later)
    first_event, later_event, retry_event = (event for _, event in await published(rabbit))
    assert retry_event == first_event
    assert first_event.occurred_at == stamp(first)
    assert later_event.occurred_at == stamp(later)


async def test_a_change_after_redis_clock_stepped_back_is_stamped_after_the_last_one(
    client: AsyncClient, rabbit: Rabbit
) -> None:
    user_id, movie_id = uuid.uuid4(), uuid.uuid4()
    key = CLOCK_KEY.format(user_id=user_id, movie_id=movie_id)
    redis = Redis.from_url(Settings().redis_url)
    try:
        seconds, micros = await redis.time()
        # The last change was stamped an hour ahead of Redis's clock now: it stepped back.
        last = (seconds + 3600) * 1_000_000 + micros
        await redis.set(key, last)

        deleted = await client.delete(f"{RATINGS}/{movie_id}", headers=bearer(make_token(user_id)))

        expires_at_ms = await redis.pexpiretime(key)
    finally:
        await redis.delete(key)
        await redis.aclose()

    assert stamp(deleted) == EPOCH + timedelta(microseconds=last + 1)
    assert stamp(deleted).tzinfo == UTC
    # Kept until Redis's clock is past the stamp, however far back it stepped.
    assert expires_at_ms == (last + 1) // 1000 + get_settings().rating_clock_ttl * 1000
    (event,) = (event for _, event in await published(rabbit))
    assert event.occurred_at == stamp(deleted)
