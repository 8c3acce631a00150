"""The filter that keeps a reloaded page's unchanged picks from being published again."""

from __future__ import annotations

import asyncio
import uuid

from contracts.broker import make_broker
from fastapi_recom import events
from fastapi_recom.events import RepeatFilter, publish_in_background
from fastapi_recom.recommender import Pick, Recommendation, TitleCache
from tests.support import free_port


def picks_for(user: uuid.UUID, *films: uuid.UUID) -> Recommendation:
    return Recommendation(
        user_id=user,
        picks=[Pick(film, 1.0, "popular", 0, None, 10, 4.0) for film in films],
        strategy="user_knn_cosine",
    )


def test_the_same_picks_within_the_window_are_a_repeat_and_changed_ones_are_not() -> None:
    viewer, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    repeats = RepeatFilter(seconds=60)

    assert not repeats.is_repeat(picks_for(viewer, first, second), now=0.0)
    assert repeats.is_repeat(picks_for(viewer, first, second), now=59.0)
    # Another order is another list: the chat room shows it as new.
    assert not repeats.is_repeat(picks_for(viewer, second, first), now=59.5)
    assert repeats.is_repeat(picks_for(viewer, second, first), now=100.0)
    # A repeat does not restart the window: 60 s after the last publish it is published again.
    assert not repeats.is_repeat(picks_for(viewer, second, first), now=119.5)
    assert not repeats.is_repeat(picks_for(uuid.uuid4(), second, first), now=119.5)


def test_viewers_are_forgotten_once_their_window_has_passed() -> None:
    film = uuid.uuid4()
    early, late = uuid.uuid4(), uuid.uuid4()
    repeats = RepeatFilter(seconds=60)
    for n in range(1_000):
        repeats.is_repeat(picks_for(uuid.uuid4(), film), now=n / 100)
    repeats.is_repeat(picks_for(early, film), now=30.0)
    assert len(repeats) == 1_001

    repeats.is_repeat(picks_for(late, film), now=75.0)

    assert len(repeats) == 2
    assert repeats.is_repeat(picks_for(early, film), now=75.0)
    assert repeats.is_repeat(picks_for(late, film), now=75.0)


def test_the_filter_never_holds_more_than_max_users() -> None:
    film = uuid.uuid4()
    viewers = [uuid.uuid4() for _ in range(10)]
    repeats = RepeatFilter(seconds=60, max_users=4)

    for n, viewer in enumerate(viewers):
        assert not repeats.is_repeat(picks_for(viewer, film), now=float(n))
        assert len(repeats) == min(n + 1, 4)

    # The most recent four are remembered; the older ones were let go first.
    assert all(repeats.is_repeat(picks_for(v, film), now=10.0) for v in viewers[6:])
    assert not repeats.is_repeat(picks_for(viewers[5], film), now=10.0)
    assert len(repeats) == 4


def test_a_zero_window_publishes_every_time() -> None:
    viewer, film = uuid.uuid4(), uuid.uuid4()
    repeats = RepeatFilter(seconds=0)

    assert not repeats.is_repeat(picks_for(viewer, film), now=0.0)
    assert not repeats.is_repeat(picks_for(viewer, film), now=0.0)
    assert len(repeats) == 0


async def test_picks_whose_publish_failed_are_published_with_the_next_request() -> None:
    # A broker that never connects: every publish fails (PublishFailed), as in an outage.
    broker = make_broker(f"amqp://guest:guest@127.0.0.1:{free_port()}/", timeout=1)
    viewer, film = uuid.uuid4(), uuid.uuid4()
    repeats = RepeatFilter(seconds=60)

    publish_in_background(broker, picks_for(viewer, film), TitleCache(), repeats)
    await asyncio.gather(*events._background)

    # Not remembered as published: the reload after the outage posts the picks.
    assert not repeats.is_repeat(picks_for(viewer, film))
    assert repeats.is_repeat(picks_for(viewer, film))
    # Another list published since is not forgotten by a late failure of an older one.
    repeats.forget(picks_for(viewer, uuid.uuid4()))
    assert repeats.is_repeat(picks_for(viewer, film))
