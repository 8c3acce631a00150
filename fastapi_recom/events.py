"""Publishing `recom.recommendations.generated`: awaited for digests, fire-and-forget for requests."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from typing import Literal

from faststream.rabbit import RabbitBroker

from contracts.broker import PublishFailed, publish_event
from contracts.events import RecommendationsGenerated, RecommendedItem
from fastapi_recom.recommender import Recommendation, TitleCache

logger = logging.getLogger(__name__)

# Strong references: the event loop keeps only weak ones to running tasks.
_background: set[asyncio.Task[None]] = set()
# A broker outage would log once per request; once per this many seconds is enough.
_WARN_EVERY = 10.0
_last_warning = 0.0


def recommendations_event(
    recommendation: Recommendation,
    titles: TitleCache,
    trigger: Literal["request", "digest"],
    event_id: uuid.UUID | None = None,
) -> RecommendationsGenerated:
    """`event_id` given when a redelivery must publish the same event again; a new one if not."""
    return RecommendationsGenerated(
        event_id=event_id or uuid.uuid4(),
        user_id=recommendation.user_id,
        items=[
            RecommendedItem(
                movie_id=pick.movie_id,
                title=titles.get(pick.movie_id),
                score=pick.score,
                reason=pick.reason,
            )
            for pick in recommendation.picks
        ],
        strategy=recommendation.strategy,
        trigger=trigger,
    )


async def publish_recommendations(
    broker: RabbitBroker,
    recommendation: Recommendation,
    titles: TitleCache,
    trigger: Literal["request", "digest"],
    event_id: uuid.UUID | None = None,
) -> None:
    """Publish with confirms; raises PublishFailed (the digest consumer then retries)."""
    await publish_event(broker, recommendations_event(recommendation, titles, trigger, event_id))


def _fingerprint(recommendation: Recommendation) -> int:
    return hash(tuple(pick.movie_id for pick in recommendation.picks))


class RepeatFilter:
    """Remembers the picks last published per viewer, so a page reload that yields the very same
    list does not post it into the chat room (and an e-mail) again within `seconds`.

    Holds only the viewers published to within the last `seconds`, at most `max_users` of them,
    each as the viewer's id as an int, a hash of the picks and the time: about 170 bytes a
    viewer, 16 MiB when full (keeping the request's UUID and the picks took about 330)."""

    def __init__(self, seconds: float, max_users: int = 100_000) -> None:
        self.seconds = seconds
        self.max_users = max_users
        # Oldest publish first: a publish moves its viewer to the end.
        self._last: OrderedDict[int, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def is_repeat(self, recommendation: Recommendation, now: float | None = None) -> bool:
        if self.seconds <= 0:
            return False
        now = time.monotonic() if now is None else now
        user, picks = recommendation.user_id.int, _fingerprint(recommendation)
        last = self._last.get(user)
        if last is not None and last[0] == picks and now - last[1] < self.seconds:
            return True
        self._last[user] = (picks, now)
        self._last.move_to_end(user)
        self._forget_before(now - self.seconds)
        return False

    def forget(self, recommendation: Recommendation) -> None:
        """Their publish failed: the next request with the same picks publishes them."""
        user = recommendation.user_id.int
        last = self._last.get(user)
        if last is not None and last[0] == _fingerprint(recommendation):
            del self._last[user]

    def _forget_before(self, cutoff: float) -> None:
        while self._last:
            oldest = next(iter(self._last.values()))
            if oldest[1] > cutoff and len(self._last) <= self.max_users:
                return
            self._last.popitem(last=False)


def publish_in_background(
    broker: RabbitBroker,
    recommendation: Recommendation,
    titles: TitleCache,
    repeats: RepeatFilter,
) -> None:
    """Publish after a request without making it wait or fail: the picks were already served."""
    if repeats.is_repeat(recommendation):
        return

    async def run() -> None:
        global _last_warning
        try:
            await publish_recommendations(broker, recommendation, titles, "request")
        except PublishFailed as exc:
            repeats.forget(recommendation)
            now = time.monotonic()
            if now - _last_warning >= _WARN_EVERY:
                _last_warning = now
                logger.warning("recommendations event not published: %s", exc)

    task = asyncio.create_task(run())
    _background.add(task)
    task.add_done_callback(_background.discard)
