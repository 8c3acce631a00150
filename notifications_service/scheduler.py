"""Digest rounds: reserve one digest per due viewer and period, then ask recom for the picks."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import PublishFailed
from contracts.errors import is_dependency_error
from contracts.events import DigestRequested, Event, utcnow
from notifications_service import service
from notifications_service.config import Settings
from notifications_service.models import DigestFrequency

logger = logging.getLogger(__name__)

Publish = Callable[[Event], Awaitable[None]]


class DuePeriod(NamedTuple):
    """A digest period that has opened: its key (`D2026-11-28`, `W2026-48`) and when it
    opened. Viewers who signed up after the opening get their first digest next period, not
    one at the next tick after signing up."""

    key: str
    opened_at: datetime | None  # None: forced, everyone subscribed now is due


def due_periods(
    now: datetime, settings: Settings, *, force: bool = False
) -> dict[DigestFrequency, DuePeriod]:
    """The period each frequency is due for at `now` (UTC).

    `force` (the superuser's "run now") skips the hour and weekday: still one per period.
    """
    periods: dict[DigestFrequency, DuePeriod] = {}
    day_opens = now.replace(hour=settings.digest_hour_utc, minute=0, second=0, microsecond=0)
    if force or now >= day_opens:
        periods[DigestFrequency.DAILY] = DuePeriod(
            f"D{now.date().isoformat()}", None if force else day_opens
        )
    week_start = (now - timedelta(days=now.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    opens = week_start + timedelta(days=settings.digest_weekday, hours=settings.digest_hour_utc)
    if force or now >= opens:
        year, week, _ = now.isocalendar()
        periods[DigestFrequency.WEEKLY] = DuePeriod(f"W{year}-{week:02d}", None if force else opens)
    return periods


async def run_digest_round(
    sessionmaker: async_sessionmaker[AsyncSession],
    publish: Publish,
    settings: Settings,
    *,
    now: datetime | None = None,
    force: bool = False,
) -> int:
    """Request digests for every due viewer; return how many viewers were requested.

    Each batch is committed before it is published: a run killed in between leaves awaiting
    digests that a later round requests again once they are stale, and recom answering twice
    still fills only one digest.
    """
    requested = 0
    for frequency, due in due_periods(now or utcnow(), settings, force=force).items():
        while True:
            async with sessionmaker() as session:
                user_ids = await service.reserve_digests(
                    session,
                    frequency=frequency,
                    period=due.key,
                    limit=settings.digest_batch_size,
                    signed_up_before=due.opened_at,
                )
            if not user_ids:
                break
            await _request(sessionmaker, publish, user_ids, due.key)
            requested += len(user_ids)
    while True:
        async with sessionmaker() as session:
            stale = await service.stale_digests(session, settings, limit=settings.digest_batch_size)
        if not stale:
            break
        by_period: dict[str, list[uuid.UUID]] = defaultdict(list)
        for user_id, period in stale:
            by_period[period].append(user_id)
        for period, user_ids in by_period.items():
            await _request(sessionmaker, publish, user_ids, period)
            requested += len(user_ids)
    if requested:
        logger.info("digest round requested %s digests", requested)
    return requested


async def _request(
    sessionmaker: async_sessionmaker[AsyncSession],
    publish: Publish,
    user_ids: list[uuid.UUID],
    period: str,
) -> None:
    try:
        await publish(DigestRequested(user_ids=user_ids, period=period))
    except PublishFailed:
        async with sessionmaker() as session:
            await service.forget_requests(session, user_ids, period)
        raise


async def run_scheduler(
    sessionmaker: async_sessionmaker[AsyncSession], publish: Publish, settings: Settings
) -> None:
    """The in-process scheduler; every replica may run it, the unique keys keep one digest."""
    while True:
        try:
            await run_digest_round(sessionmaker, publish, settings)
        except Exception as exc:
            if isinstance(exc, PublishFailed) or is_dependency_error(exc):
                logger.warning(
                    "digest round stopped, next one in %s s: %r",
                    settings.digest_scheduler_seconds,
                    exc,
                )
            else:
                # A bug or an unexpected database error must not stop the digests for good.
                logger.exception(
                    "digest round failed, next one in %s s", settings.digest_scheduler_seconds
                )
        await asyncio.sleep(settings.digest_scheduler_seconds)


def start_scheduler(
    sessionmaker: async_sessionmaker[AsyncSession], publish: Publish, settings: Settings
) -> asyncio.Task[None]:
    """`run_scheduler` as a task that cannot end unnoticed: only cancelling it is silent."""
    task = asyncio.create_task(
        run_scheduler(sessionmaker, publish, settings), name="digest-scheduler"
    )
    task.add_done_callback(_report_end)
    return task


def _report_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    logger.error(
        "digest scheduler ended; no digest round runs until a restart",
        exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
    )
