"""Transactional outbox: events are written with the change they report and relayed with confirms."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from datetime import timedelta

from faststream.rabbit import RabbitBroker
from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import PublishFailed, publish_event
from contracts.events import ALL_EVENTS, Event, utcnow
from fastapi_auth.models import OutboxEvent

logger = logging.getLogger(__name__)

EVENT_TYPES: dict[str, type[Event]] = {cls.routing_key: cls for cls in ALL_EVENTS}

# A message the broker refuses (unroutable, nacked) is retried after 2, 4, ... up to 60 s.
MAX_BACKOFF_SECONDS = 60
# Sent rows are kept this long for inspection, then purged (checked every PURGE_EVERY s).
KEEP_SENT = timedelta(days=7)
PURGE_EVERY = 3600.0


def stage(session: AsyncSession, *events: Event) -> None:
    """Add events to the session: they are committed, or rolled back, with the change."""
    for event in events:
        session.add(
            OutboxEvent(
                event_id=event.event_id,
                routing_key=event.routing_key,
                payload=event.model_dump(mode="json"),
            )
        )


class OutboxRelay:
    """Publishes pending rows in order and marks them sent; one per process, safe with many.

    Rows are claimed with `FOR UPDATE SKIP LOCKED`, so replicas share the work. A row is
    marked sent only after the broker confirmed it: delivery is at least once, and the
    event id is the message id consumers deduplicate on.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        broker: RabbitBroker,
        *,
        poll_seconds: float = 1.0,
        batch_size: int = 100,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._broker = broker
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._wakeup = asyncio.Event()
        self._last_purge = 0.0
        self._stopping = False

    def wake(self) -> None:
        """Relay now rather than at the next poll (called after committing staged events)."""
        self._wakeup.set()

    def stop(self) -> None:
        # A flag as well as Task.cancel(): a cancellation that lands while asyncpg or
        # asyncio.timeout is finishing can be swallowed, and the loop must end anyway.
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                more = await self.relay_batch()
                await self._purge_if_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database may be down: keep the loop alive and try again at the next poll.
                logger.warning("outbox relay failed, retrying: %r", exc)
                more = False
            if not more:
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_seconds):
                        await self._wakeup.wait()
                self._wakeup.clear()

    async def relay_batch(self) -> bool:
        """Publish the due rows; True when a whole batch went out (more may be waiting)."""
        async with self._sessionmaker() as session:
            rows = (
                await session.scalars(
                    select(OutboxEvent)
                    .where(OutboxEvent.sent_at.is_(None), OutboxEvent.next_attempt_at <= utcnow())
                    .order_by(OutboxEvent.created_at)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            handled = 0
            for row in rows:
                if not await self._publish(row):
                    break
                handled += 1
            await session.commit()
        sent = sum(row.sent_at is not None for row in rows)
        if sent:
            logger.info("outbox relayed %s event(s)", sent)
        return handled == len(rows) == self._batch_size

    async def _publish(self, row: OutboxEvent) -> bool:
        """Publish one row; False when the broker is unreachable (the batch stops there)."""
        try:
            event = EVENT_TYPES[row.routing_key].model_validate(row.payload)
            await publish_event(self._broker, event)
        except PublishFailed as exc:
            if not await self._broker.ping(timeout=0.5):
                logger.warning("broker unreachable; %s waits in the outbox", row.event_id)
                return False
            self._postpone(row, repr(exc))
            logger.warning("broker refused %s (%s): %r", row.event_id, row.routing_key, exc)
            return True
        except (KeyError, ValidationError) as exc:
            self._postpone(row, repr(exc))
            logger.error("outbox row %s cannot be read: %r", row.event_id, exc)
            return True
        row.sent_at = utcnow()
        row.last_error = None
        return True

    @staticmethod
    def _postpone(row: OutboxEvent, error: str) -> None:
        row.attempts += 1
        delay = min(2**row.attempts, MAX_BACKOFF_SECONDS)
        row.next_attempt_at = utcnow() + timedelta(seconds=delay)
        row.last_error = error[:1000]

    async def _purge_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = now
        async with self._sessionmaker() as session:
            await session.execute(
                delete(OutboxEvent).where(OutboxEvent.sent_at < utcnow() - KEEP_SENT)
            )
            await session.commit()
