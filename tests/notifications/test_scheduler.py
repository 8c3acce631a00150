"""The digest scheduler outlives a failed round and never ends unnoticed."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from asyncpg.exceptions import AdminShutdownError
from faststream.rabbit import RabbitBroker
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import publish_event
from notifications_service import scheduler
from notifications_service import service as notifications
from notifications_service.config import Settings
from notifications_service.main import app
from tests.notifications.conftest import FakeRecom, Service, create_recipient
from tests.support import wait_for

LOGGER = "notifications_service.scheduler"


@pytest.mark.parametrize(
    ("error", "level"),
    [
        # What SQLAlchemy's asyncpg dialect makes of a PostgreSQL restart (57P01).
        (DBAPIError("SELECT", {}, AdminShutdownError("terminating connection")), logging.WARNING),
        # A deadlock or any other database error that is not an outage.
        (DBAPIError("SELECT", {}, Exception("deadlock detected")), logging.ERROR),
        (RuntimeError("a bug"), logging.ERROR),
    ],
    ids=["postgres-restart", "database-error", "bug"],
)
async def test_scheduler_requests_digests_in_next_round_after_round_fails(
    db: async_sessionmaker[AsyncSession],
    broker: RabbitBroker,
    recom: FakeRecom,
    service_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    level: int,
) -> None:
    async with db() as session:
        viewer = await create_recipient(session, created_at=datetime.now(UTC) - timedelta(days=1))
    reserve = notifications.reserve_digests
    failed: list[Exception] = []

    async def fails_once(session: AsyncSession, **kwargs: Any) -> Any:
        if not failed:
            failed.append(error)
            raise error
        return await reserve(session, **kwargs)

    monkeypatch.setattr(notifications, "reserve_digests", fails_once)
    settings = service_settings.model_copy(update={"digest_scheduler_seconds": 0.05})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        task = asyncio.create_task(
            scheduler.run_scheduler(db, partial(publish_event, broker), settings)
        )
        try:

            async def requested_or_ended() -> bool:
                return task.done() or bool(recom.requested())

            await wait_for(requested_or_ended)
            assert not task.done(), task.exception()
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    assert failed == [error]
    assert recom.requested() == [viewer.user_id]
    [record] = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert record.levelno == level
    if level == logging.ERROR:
        assert record.exc_info is not None
        assert record.exc_info[1] is error


async def test_scheduler_task_end_logged_unless_cancelled(
    db: async_sessionmaker[AsyncSession],
    broker: RabbitBroker,
    service_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Fatal(BaseException):
        """Not an Exception, so no round catches it: the task ends."""

    async def no_round(*_: Any, **__: Any) -> int:
        return 0

    async def fatal_round(*_: Any, **__: Any) -> int:
        raise Fatal

    publish = partial(publish_event, broker)
    settings = service_settings.model_copy(update={"digest_scheduler_seconds": 3600})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        monkeypatch.setattr(scheduler, "run_digest_round", no_round)
        cancelled = scheduler.start_scheduler(db, publish, settings)
        await asyncio.sleep(0)
        cancelled.cancel()
        with suppress(asyncio.CancelledError):
            await cancelled
        monkeypatch.setattr(scheduler, "run_digest_round", fatal_round)
        ended = scheduler.start_scheduler(db, publish, settings)
        with suppress(Fatal):
            await ended
        await asyncio.sleep(0)  # let every done callback run

    assert cancelled.cancelled()
    [record] = [r for r in caplog.records if r.name == LOGGER]  # the end, not the cancel
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Fatal)


async def test_ready_fails_once_a_background_task_has_ended(service: Service) -> None:
    # The sender ends (here cancelled, as a crash would end it): nothing is mailed until a
    # restart, so /ready asks the orchestrator for one.
    [sender] = [task for task in app.state.background if task.get_name() == "mail-dispatcher"]
    sender.cancel()
    with suppress(asyncio.CancelledError):
        await sender

    answer = await service.client.get("/notifications/ready")

    assert answer.status_code == 503
    assert answer.json()["checks"]["background"] == "unavailable: mail-dispatcher ended"
