"""recom's ratings consumer on the real broker and database: order, replays, poison, failures."""

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.broker import declare_topology, make_broker
from contracts.db import make_engine, make_sessionmaker
from contracts.events import Event, RatingDeleted, RatingSubmitted
from fastapi_recom.config import get_settings
from fastapi_recom.consumers import RATING_EVENTS, RATINGS_QUEUE, RatingsConsumer, Write
from fastapi_recom.main import app
from fastapi_recom.ratings import TOMBSTONE_SCORE, RatingChange, apply_changes
from tests.ratings_pipeline import (
    DEAD_QUEUE,
    RABBITMQ_URL,
    Rabbit,
    StoredRating,
    deaths,
    empty_ratings_queues,
    stored_ratings,
    stored_rows,
)
from tests.support import wait_for

Pair = tuple[uuid.UUID, uuid.UUID]


def rating(user_id: uuid.UUID, movie_id: uuid.UUID, score: int, at: datetime) -> RatingSubmitted:
    return RatingSubmitted(user_id=user_id, movie_id=movie_id, score=score, occurred_at=at)


def deletion(user_id: uuid.UUID, movie_id: uuid.UUID, at: datetime) -> RatingDeleted:
    return RatingDeleted(user_id=user_id, movie_id=movie_id, occurred_at=at)


def state_of(event: Event) -> StoredRating:
    if isinstance(event, RatingDeleted):
        return (TOMBSTONE_SCORE, event.occurred_at, True)
    assert isinstance(event, RatingSubmitted)
    return (event.score, event.occurred_at, False)


@pytest.fixture
async def rabbit() -> AsyncIterator[Rabbit]:
    async with empty_ratings_queues() as rabbit:
        yield rabbit


@pytest.fixture
async def recom(rabbit: Rabbit) -> AsyncIterator[AsyncClient]:
    """fastapi_recom in-process, ready: its consumer is draining `recom.ratings`."""
    get_settings.cache_clear()
    async with (
        LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager,
        AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://test") as client,
    ):

        async def ready() -> bool:
            return (await client.get("/recom/ready")).status_code == 200

        await wait_for(ready, timeout=20)
        yield client
    get_settings.cache_clear()


async def wait_stored(expected: dict[Pair, StoredRating], *, timeout: float = 20) -> None:
    users = {user_id for user_id, _ in expected}

    async def done() -> bool:
        stored = await stored_ratings(users)
        return all(stored.get(pair) == state for pair, state in expected.items())

    await wait_for(done, timeout=timeout, interval=0.1)


async def settle(rabbit: Rabbit) -> None:
    """Wait until the consumer has handled everything published so far: the queue is FIFO and
    a batch is committed whole, so once a marker published last is stored, so is the rest."""
    marker = rating(uuid.uuid4(), uuid.uuid4(), 5, datetime.now(UTC))
    await rabbit.publish_events([marker])
    await wait_stored({(marker.user_id, marker.movie_id): state_of(marker)})


@pytest.mark.usefixtures("recom")
async def test_shuffled_versions_end_at_newest_per_pair(rabbit: Rabbit) -> None:
    rng = random.Random(3)
    base = datetime.now(UTC)
    users = [uuid.uuid4() for _ in range(50)]
    movies = [uuid.uuid4() for _ in range(10)]
    events: list[Event] = []
    expected: dict[Pair, StoredRating] = {}
    for i, (user_id, movie_id) in enumerate((u, m) for u in users for m in movies):
        versions: list[Event] = []
        for v in range(5):
            at = base + timedelta(seconds=v, microseconds=i)
            # Every fifth pair ends deleted; every third is deleted and rated again midway.
            if (v == 4 and i % 5 == 0) or (v == 2 and i % 3 == 0):
                versions.append(deletion(user_id, movie_id, at))
            else:
                versions.append(rating(user_id, movie_id, rng.randint(1, 10), at))
        events.extend(versions)
        expected[(user_id, movie_id)] = state_of(versions[-1])
    rng.shuffle(events)

    await rabbit.publish_events(events)

    await wait_stored(expected)
    assert len(await stored_ratings(users)) == 500
    assert sum(deleted for _, _, deleted in expected.values()) == 100
    assert await rabbit.depth(DEAD_QUEUE) == 0


@pytest.mark.usefixtures("recom")
async def test_deletion_stays_when_older_rating_arrives_late(rabbit: Rabbit) -> None:
    user_id, movie_id = uuid.uuid4(), uuid.uuid4()
    rated_at = datetime.now(UTC)
    deleted = deletion(user_id, movie_id, rated_at + timedelta(seconds=1))
    await rabbit.publish_events([rating(user_id, movie_id, 8, rated_at), deleted])
    await wait_stored({(user_id, movie_id): state_of(deleted)})

    await rabbit.publish_events(
        [rating(user_id, movie_id, 3, rated_at + timedelta(microseconds=1))]
    )
    await settle(rabbit)

    assert await stored_ratings([user_id]) == {(user_id, movie_id): state_of(deleted)}


@pytest.mark.usefixtures("recom")
async def test_rating_after_deletion_brings_the_pair_back(rabbit: Rabbit) -> None:
    user_id, movie_id = uuid.uuid4(), uuid.uuid4()
    at = datetime.now(UTC)
    again = rating(user_id, movie_id, 6, at + timedelta(seconds=2))

    await rabbit.publish_events([deletion(user_id, movie_id, at + timedelta(seconds=1))])
    await settle(rabbit)
    await rabbit.publish_events([again])

    await wait_stored({(user_id, movie_id): (6, again.occurred_at, False)})


@pytest.mark.usefixtures("recom")
async def test_poison_messages_are_dead_lettered_at_once_while_valid_ones_are_stored(
    rabbit: Rabbit,
) -> None:
    user_id = uuid.uuid4()
    at = datetime.now(UTC)
    valid = [rating(user_id, uuid.uuid4(), score, at) for score in range(1, 8)]
    movie = str(uuid.uuid4())
    poison = {
        "not-json": (b"{movie_id: nope", "ugc.rating.submitted"),
        "not-an-object": (b"[1, 2, 3]", "ugc.rating.submitted"),
        "movie-missing": (
            f'{{"event_id": "{uuid.uuid4()}", "user_id": "{user_id}", "score": 5, '
            f'"occurred_at": "{at.isoformat()}"}}'.encode(),
            "ugc.rating.submitted",
        ),
        "score-out-of-range": (
            rating(user_id, uuid.uuid4(), 5, at)
            .model_dump_json()
            .replace('"score":5', '"score":11')
            .encode(),
            "ugc.rating.submitted",
        ),
        "deletion-as-rating": (
            deletion(user_id, uuid.uuid4(), at).model_dump_json().encode(),
            "ugc.rating.submitted",
        ),
        "naive-time": (
            f'{{"event_id": "{uuid.uuid4()}", "user_id": "{user_id}", "movie_id": "{movie}", '
            f'"occurred_at": "2026-01-01T10:00:00"}}'.encode(),
            "ugc.rating.deleted",
        ),
    }

    # Each poison message between two valid ones.
    for (name, (body, routing_key)), before in zip(poison.items(), valid, strict=False):
        await rabbit.publish_events([before])
        await rabbit.publish(body, routing_key, message_id=name)
    await rabbit.publish_events([valid[-1]])

    await wait_stored({(e.user_id, e.movie_id): state_of(e) for e in valid})

    async def all_dead_lettered() -> bool:
        return await rabbit.depth(DEAD_QUEUE) == len(poison)

    await wait_for(all_dead_lettered, timeout=10)
    dead = await rabbit.take_all(DEAD_QUEUE)
    assert sorted(m.message_id or "" for m in dead) == sorted(poison)
    for message in dead:
        [death] = deaths(message)
        # Rejected on its first delivery, not dead-lettered by the delivery limit.
        assert (death["reason"], death["queue"], death["count"]) == ("rejected", RATINGS_QUEUE, 1)
        assert message.headers.get("x-delivery-count", 0) == 0
    assert len(await stored_ratings([user_id])) == len(valid)


@pytest.mark.usefixtures("recom")
async def test_replaying_events_three_times_changes_nothing(rabbit: Rabbit) -> None:
    base = datetime.now(UTC)
    users = [uuid.uuid4() for _ in range(20)]
    events: list[Event] = []
    for i, user_id in enumerate(users):
        for j in range(10):
            movie_id = uuid.uuid4()
            at = base + timedelta(microseconds=i * 10 + j)
            events.append(rating(user_id, movie_id, (i + j) % 10 + 1, at))
            if j % 4 == 0:
                events.append(deletion(user_id, movie_id, at + timedelta(seconds=1)))
    await rabbit.publish_events(events)
    await settle(rabbit)
    pairs = {
        (e.user_id, e.movie_id) for e in events if isinstance(e, RatingSubmitted | RatingDeleted)
    }
    before = await stored_rows(pairs)
    assert len(before) == 200

    for _ in range(3):
        replay = list(events)
        random.shuffle(replay)
        await rabbit.publish_events(replay)
    await settle(rabbit)

    # updated_at included: a replay does not even rewrite a row with the same values.
    assert await stored_rows(pairs) == before
    assert await rabbit.depth(DEAD_QUEUE) == 0


@asynccontextmanager
async def own_consumer(
    rabbit: Rabbit, write: Write, **options: int
) -> AsyncIterator[RatingsConsumer]:
    """A RatingsConsumer with this writer on a queue of its own, started."""
    queue_name = f"test.ratings.{uuid.uuid4().hex[:8]}"
    broker = make_broker(RABBITMQ_URL)
    await broker.connect()
    engine = make_engine(get_settings().database_url, pool_size=2)
    consumer = RatingsConsumer(RABBITMQ_URL, queue_name=queue_name, write=write, **options)
    try:
        await consumer.start(broker, make_sessionmaker(engine))
        yield consumer
    finally:
        await consumer.stop(timeout=0.5)
        await rabbit.channel.queue_delete(queue_name)
        await rabbit.channel.queue_delete(f"{queue_name}.dead")
        await broker.stop()
        await engine.dispose()


async def test_event_that_keeps_failing_is_dead_lettered_by_delivery_limit(rabbit: Rabbit) -> None:
    """A valid event whose write fails (here: a writer that refuses one film) goes back to the
    queue and is dead-lettered by the quorum queue's delivery limit; the events batched with it
    are stored, and the consumer goes on."""
    cursed = uuid.uuid4()

    async def write(session: AsyncSession, changes: Sequence[RatingChange]) -> None:
        if any(change.movie_id == cursed for change in changes):
            raise RuntimeError("this film cannot be written")
        await apply_changes(session, changes)

    user_id = uuid.uuid4()
    at = datetime.now(UTC)
    good = [rating(user_id, uuid.uuid4(), 7, at) for _ in range(20)]
    bad = rating(user_id, cursed, 7, at)
    async with own_consumer(rabbit, write, delivery_limit=2) as consumer:
        queue_name = consumer.queue_name
        await rabbit.publish_events([*good[:10], bad, *good[10:]], concurrency=1)

        await wait_stored({(e.user_id, e.movie_id): state_of(e) for e in good})

        async def dead_lettered() -> bool:
            return await rabbit.depth(f"{queue_name}.dead") == 1

        await wait_for(dead_lettered, timeout=20)
        [dead] = await rabbit.take_all(f"{queue_name}.dead")
        assert dead.message_id == str(bad.event_id)
        assert deaths(dead)[0]["reason"] == "delivery_limit"
        later = rating(user_id, uuid.uuid4(), 3, at)
        await rabbit.publish_events([later])
        await wait_stored({(later.user_id, later.movie_id): state_of(later)})
    assert cursed not in {movie_id for _, movie_id in await stored_ratings([user_id])}


async def test_deliveries_are_not_acked_before_their_batch_commits(rabbit: Rabbit) -> None:
    """With a prefetch of several batches, everything delivered is still unacknowledged while
    the write hangs: stopping the consumer then returns every event to the queue."""
    writes: list[int] = []

    async def write(session: AsyncSession, changes: Sequence[RatingChange]) -> None:
        writes.append(len(changes))
        await asyncio.Event().wait()  # never commits

    events = [rating(uuid.uuid4(), uuid.uuid4(), 5, datetime.now(UTC)) for _ in range(3000)]
    async with own_consumer(rabbit, write, prefetch=4000, batch_size=1000) as consumer:
        await rabbit.publish_events(events, concurrency=500)

        async def all_delivered() -> bool:
            return await rabbit.depth(consumer.queue_name) == 0 and len(writes) == 1

        await wait_for(all_delivered, timeout=20)
        await consumer.stop(timeout=0.5)

        async def all_returned() -> bool:
            return await rabbit.depth(consumer.queue_name) == len(events)

        await wait_for(all_returned, timeout=10)


async def test_a_batch_given_up_while_stopping_goes_back_and_no_later_ack_covers_it(
    rabbit: Rabbit,
) -> None:
    """Stopping while the database fails a batch: that batch goes back to the queue. A later
    batch that still commits is acked with `multiple`, which used to ack the unwritten one too."""
    gate = asyncio.Event()
    writes: list[int] = []

    async def write(session: AsyncSession, changes: Sequence[RatingChange]) -> None:
        writes.append(len(changes))
        if len(writes) == 1:
            await gate.wait()
            raise OSError("database went away")
        await apply_changes(session, changes)

    at = datetime.now(UTC)
    first = [rating(uuid.uuid4(), uuid.uuid4(), 5, at) for _ in range(3)]
    later = rating(uuid.uuid4(), uuid.uuid4(), 6, at)
    async with own_consumer(rabbit, write, batch_size=3) as consumer:
        await rabbit.publish_events(first)
        await wait_for(lambda: _true(writes == [3]), timeout=10)
        await rabbit.publish_events([later])

        # The later event waits in the consumer's next batch.
        await wait_for(lambda: _true(len(consumer._pending) == 1), timeout=10)
        stopping = asyncio.create_task(consumer.stop(timeout=5))
        await asyncio.sleep(0)
        gate.set()
        await stopping

        await wait_stored({(later.user_id, later.movie_id): state_of(later)})

        async def first_back() -> bool:
            return await rabbit.depth(consumer.queue_name) == len(first)

        await wait_for(first_back, timeout=10)


async def _true(value: bool) -> bool:
    return value


async def test_upsert_keeps_newest_of_duplicates_within_one_batch() -> None:
    engine = make_engine(get_settings().database_url, pool_size=1)
    user_id, movie_id = uuid.uuid4(), uuid.uuid4()
    at = datetime.now(UTC)
    changes = [
        RatingChange(user_id, movie_id, score, at + timedelta(microseconds=score), False)
        for score in (4, 9, 2)
    ]
    try:
        async with make_sessionmaker(engine)() as session:
            await apply_changes(session, changes)
    finally:
        await engine.dispose()

    assert await stored_ratings([user_id]) == {
        (user_id, movie_id): (9, at + timedelta(microseconds=9), False)
    }


async def test_consumer_cancelled_by_the_broker_resumes_once_its_queue_is_back(
    rabbit: Rabbit,
) -> None:
    """Deleting the queue makes the broker cancel its consumer, which pika does not recover by
    itself: the consumer reconnects until the queue is declared again (as recom's start-up and
    every other replica's do), then stores what arrives."""
    async with own_consumer(rabbit, apply_changes) as consumer:
        await rabbit.channel.queue_delete(consumer.queue_name)

        async def stopped() -> bool:
            return not consumer.consuming

        await wait_for(stopped, timeout=5)
        broker = make_broker(RABBITMQ_URL)
        await broker.connect()
        try:
            await declare_topology(broker, consumer.queue_name, tuple(RATING_EVENTS))
        finally:
            await broker.stop()

        async def consuming() -> bool:
            return consumer.consuming

        await wait_for(consuming, timeout=10)
        event = rating(uuid.uuid4(), uuid.uuid4(), 8, datetime.now(UTC))
        await rabbit.publish_events([event])
        await wait_stored({(event.user_id, event.movie_id): state_of(event)})
