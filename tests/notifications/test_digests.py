"""Recommendation e-mails: preference paths, the hourly throttle, exactly one digest per period."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from faststream.rabbit import RabbitBroker
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import publish_event
from contracts.events import Event, RecommendationsGenerated
from notifications_service import service as notifications
from notifications_service.config import Settings
from notifications_service.models import DeliveryKind, DeliveryStatus, DigestFrequency
from notifications_service.scheduler import DuePeriod, due_periods, run_digest_round
from tests.notifications.conftest import (
    TEST_SETTINGS,
    FakeRecom,
    Service,
    body,
    count_status,
    create_recipient,
    deliveries,
    picks,
    publish,
)
from tests.notifications.sink import SmtpSink
from tests.support import ServiceProcess, free_port, wait_for


def requested_picks(user_id: uuid.UUID) -> RecommendationsGenerated:
    return RecommendationsGenerated(
        user_id=user_id,
        items=picks("Alien", "Brazil"),
        strategy="user-user-cosine",
        trigger="request",
    )


async def _digest_round(service: Service, broker: RabbitBroker, **settings: object) -> int:
    return await run_digest_round(
        service.sessionmaker,
        partial(publish_event, broker),
        service.settings.model_copy(update=settings),
        force=True,
    )


async def test_immediate_viewer_mailed_at_once_at_most_once_an_hour(
    service: Service, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    async with service.sessionmaker() as session:
        viewer = await create_recipient(session, digest_frequency="immediate")
    first, second = requested_picks(viewer.user_id), requested_picks(viewer.user_id)
    await publish(broker, first)
    await wait_for(lambda: _sent(service, viewer.user_id, 1))
    await publish(broker, second, second)

    async def both_recorded() -> bool:
        return len(await deliveries(service.sessionmaker, viewer.user_id)) == 2

    await wait_for(both_recorded)
    rows = await deliveries(service.sessionmaker, viewer.user_id)
    assert [(r.event_id, r.status) for r in rows] == [
        (first.event_id, DeliveryStatus.SENT),
        (second.event_id, DeliveryStatus.SKIPPED),
    ]
    [message] = smtp_sink.to(viewer.email)
    assert message["Subject"] == "New film picks for you"
    text = body(message, "plain")
    assert "1. Alien\n   Because you liked film 0" in text
    assert "2. Brazil\n   Because you liked film 1" in text
    # The score ranks the picks; it is no mark out of 10 and the e-mail does not print it.
    assert "9.0" not in text
    assert "9.0" not in body(message, "html")


async def test_request_picks_not_mailed_when_frequency_daily_weekly_or_off(
    service: Service, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    async with service.sessionmaker() as session:
        others = [
            await create_recipient(session, digest_frequency=frequency)
            for frequency in ("daily", "weekly", "off")
        ]
        unverified = await create_recipient(
            session, digest_frequency="immediate", is_verified=False
        )
        marker = await create_recipient(session, digest_frequency="immediate")
    await publish(broker, *(requested_picks(v.user_id) for v in [*others, unverified]))
    await publish(broker, requested_picks(marker.user_id))

    await wait_for(lambda: _sent(service, marker.user_id, 1))
    for viewer in [*others, unverified]:
        assert await deliveries(service.sessionmaker, viewer.user_id) == []
        assert smtp_sink.to(viewer.email) == []


async def test_digest_requested_for_verified_subscribed_daily_and_weekly_viewers_only(
    service: Service, broker: RabbitBroker, recom: FakeRecom, smtp_sink: SmtpSink
) -> None:
    async with service.sessionmaker() as session:
        daily = await create_recipient(session, digest_frequency="daily")
        weekly = await create_recipient(session, digest_frequency="weekly")
        for frequency in ("off", "immediate"):
            await create_recipient(session, digest_frequency=frequency)
        await create_recipient(session, digest_frequency="daily", is_verified=False)
        gone = await create_recipient(session, digest_frequency="weekly")
        gone.unsubscribed_at = gone.created_at
        await session.commit()

    assert await _digest_round(service, broker) == 2
    await wait_for(lambda: _sent(service, daily.user_id, 1))
    await wait_for(lambda: _sent(service, weekly.user_id, 1))

    assert sorted(recom.requested()) == sorted([daily.user_id, weekly.user_id])
    assert {r.period for r in recom.requests} == {
        (await deliveries(service.sessionmaker, daily.user_id))[0].period,
        (await deliveries(service.sessionmaker, weekly.user_id))[0].period,
    }
    [message] = smtp_sink.to(daily.email)
    assert message["Subject"] == "Your daily film picks"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert smtp_sink.to(weekly.email)[0]["Subject"] == "Your weekly film picks"
    assert await count_status(service.sessionmaker, DeliveryStatus.SENT) == 2


async def test_scheduled_digest_starts_the_period_after_sign_up(
    service: Service, broker: RabbitBroker, recom: FakeRecom
) -> None:
    # Digests open on Tuesdays (weekly) and every day (daily) at 08:00 UTC.
    settings = service.settings.model_copy(update={"digest_hour_utc": 8, "digest_weekday": 1})
    tuesday = datetime(2026, 11, 24, 12, tzinfo=UTC)
    async with service.sessionmaker() as session:
        daily_before = await create_recipient(session, created_at=tuesday - timedelta(days=1))
        daily_after = await create_recipient(session, created_at=tuesday - timedelta(hours=3))
        weekly_before = await create_recipient(
            session, digest_frequency="weekly", created_at=tuesday - timedelta(days=4)
        )
        weekly_after = await create_recipient(
            session, digest_frequency="weekly", created_at=tuesday - timedelta(hours=1)
        )
    publish_ = partial(publish_event, broker)

    assert await run_digest_round(service.sessionmaker, publish_, settings, now=tuesday) == 2
    await wait_for(lambda: _answers_seen(recom, 2))
    assert sorted(recom.requested()) == sorted([daily_before.user_id, weekly_before.user_id])
    assert await deliveries(service.sessionmaker, daily_after.user_id) == []

    # Wednesday's daily digest is the newcomer's first; the weekly one waits for next Tuesday.
    wednesday = tuesday + timedelta(days=1)
    assert await run_digest_round(service.sessionmaker, publish_, settings, now=wednesday) == 2
    [first] = await deliveries(service.sessionmaker, daily_after.user_id)
    assert first.period == "D2026-11-25"
    assert await deliveries(service.sessionmaker, weekly_after.user_id) == []
    next_tuesday = tuesday + timedelta(days=7)
    await run_digest_round(service.sessionmaker, publish_, settings, now=next_tuesday)
    [weekly] = await deliveries(service.sessionmaker, weekly_after.user_id)
    assert weekly.period == "W2026-49"


async def test_one_digest_per_period_when_scheduler_runs_twice(
    service: Service, broker: RabbitBroker, recom: FakeRecom, smtp_sink: SmtpSink
) -> None:
    recom.answers_per_request = 2  # recom answering twice must not send twice either
    async with service.sessionmaker() as session:
        viewers = [await create_recipient(session) for _ in range(12)]

    counts = await asyncio.gather(
        _digest_round(service, broker, digest_batch_size=5),
        _digest_round(service, broker, digest_batch_size=5),
    )
    assert sum(counts) == 12
    assert await _digest_round(service, broker) == 0

    await wait_for(lambda: _total_sent(service, 12))
    await wait_for(lambda: _answers_seen(recom, 12))
    assert sorted(recom.requested()) == sorted(v.user_id for v in viewers)
    for viewer in viewers:
        assert len(smtp_sink.to(viewer.email)) == 1
        [row] = await deliveries(service.sessionmaker, viewer.user_id)
        assert (row.kind, row.status) == (DeliveryKind.DIGEST, DeliveryStatus.SENT)


async def test_one_digest_per_period_when_round_killed_midway(
    service: Service, broker: RabbitBroker, recom: FakeRecom, smtp_sink: SmtpSink
) -> None:
    async with service.sessionmaker() as session:
        viewers = [await create_recipient(session) for _ in range(5)]
    published: list[Event] = []

    async def dies_on_second_publish(event: Event) -> None:
        if published:
            raise asyncio.CancelledError  # the process stops between commit and publish
        published.append(event)
        await publish_event(broker, event)

    settings = service.settings.model_copy(update={"digest_batch_size": 2})
    with pytest.raises(asyncio.CancelledError):
        await run_digest_round(service.sessionmaker, dies_on_second_publish, settings, force=True)
    # The next round requests the viewers never reserved; the reserved but unpublished ones
    # wait until their request is stale, then go out again.
    assert await _digest_round(service, broker, digest_batch_size=2) == 1
    assert await _digest_round(service, broker, digest_answer_timeout_seconds=0.001) >= 2

    await wait_for(lambda: _total_sent(service, 5))
    for viewer in viewers:
        assert len(smtp_sink.to(viewer.email)) == 1
        assert len(await deliveries(service.sessionmaker, viewer.user_id)) == 1


@pytest.mark.slow
async def test_one_digest_per_period_when_service_process_killed(
    db: async_sessionmaker[AsyncSession], recom: FakeRecom, smtp_sink: SmtpSink
) -> None:
    # Signed up yesterday: the process's own scheduler finds today's digest due for them.
    yesterday = datetime.now(UTC) - timedelta(days=1)
    async with db() as session:
        viewers = [await create_recipient(session, created_at=yesterday) for _ in range(60)]
    env = {
        **TEST_SETTINGS,
        "DIGEST_SCHEDULER_SECONDS": "0.2",
        "DIGEST_BATCH_SIZE": "3",
        "DIGEST_ANSWER_TIMEOUT_SECONDS": "1",
        # A killed sender's leases run out this soon.
        "DELIVERY_LEASE_SECONDS": "2",
        # The first process reaches no SMTP server, so the kill lands in the scheduler's work,
        # not in the documented window between the server's 250 and the commit.
        "SMTP_PORT": str(free_port()),
    }
    first = ServiceProcess("notifications_service.main:app", "notifications", env=env)
    await first.start()
    try:
        await wait_for(lambda: _answers_seen(recom, 1), timeout=20)
    finally:
        first.kill()
    second = ServiceProcess(
        "notifications_service.main:app",
        "notifications",
        env={**env, "SMTP_PORT": str(smtp_sink.port)},
    )
    await second.start()
    try:
        await wait_for(lambda: _count(db, DeliveryStatus.SENT, 60), timeout=30)
    finally:
        second.stop()
    assert set(recom.requested()) == {v.user_id for v in viewers}
    for viewer in viewers:
        assert len(smtp_sink.to(viewer.email)) == 1


async def test_digest_skipped_as_no_picks_or_opted_out_by_what_is_missing(
    db: async_sessionmaker[AsyncSession], service_settings: Settings
) -> None:
    async with db() as session:
        wanting = await create_recipient(session)
        opted_out = await create_recipient(session)
        await notifications.reserve_digests(
            session, frequency=DigestFrequency.DAILY, period="D2026-11-25", limit=10
        )
        opted_out.digest_frequency = DigestFrequency.OFF
        await session.commit()

    answers = {wanting.user_id: [], opted_out.user_id: picks("Heat")}
    for user_id, items in answers.items():
        answer = RecommendationsGenerated(
            user_id=user_id, items=items, strategy="user-user-cosine", trigger="digest"
        )
        async with db() as session:
            assert await notifications.fill_digest(session, answer, service_settings) is False

    [empty] = await deliveries(db, wanting.user_id)
    assert (empty.status, empty.last_error) == (DeliveryStatus.SKIPPED, "no picks")
    [unwanted] = await deliveries(db, opted_out.user_id)
    assert (unwanted.status, unwanted.last_error) == (DeliveryStatus.SKIPPED, "viewer opted out")


async def _sent(service: Service, user_id: uuid.UUID, count: int) -> bool:
    rows = await deliveries(service.sessionmaker, user_id)
    return sum(r.status == DeliveryStatus.SENT for r in rows) == count


async def _total_sent(service: Service, count: int) -> bool:
    return await _count(service.sessionmaker, DeliveryStatus.SENT, count)


async def _count(db: async_sessionmaker[AsyncSession], status: DeliveryStatus, count: int) -> bool:
    return await count_status(db, status) == count


async def _answers_seen(recom: FakeRecom, count: int) -> bool:
    return len(set(recom.requested())) >= count


def test_due_periods_open_at_configured_hour_and_weekday(service_settings: Settings) -> None:
    settings = service_settings.model_copy(update={"digest_hour_utc": 8, "digest_weekday": 2})
    tuesday_noon = datetime(2026, 11, 24, 12, tzinfo=UTC)
    wednesday_early = datetime(2026, 11, 25, 7, 59, tzinfo=UTC)
    wednesday_eight = datetime(2026, 11, 25, 8, tzinfo=UTC)

    assert due_periods(tuesday_noon, settings) == {
        DigestFrequency.DAILY: DuePeriod("D2026-11-24", tuesday_noon.replace(hour=8))
    }
    assert due_periods(wednesday_early, settings) == {}
    assert due_periods(wednesday_eight, settings) == {
        DigestFrequency.DAILY: DuePeriod("D2026-11-25", wednesday_eight),
        DigestFrequency.WEEKLY: DuePeriod("W2026-48", wednesday_eight),
    }
    # Forced: today's and this week's keys, for everyone subscribed now.
    assert due_periods(wednesday_early, settings, force=True) == {
        DigestFrequency.DAILY: DuePeriod("D2026-11-25", None),
        DigestFrequency.WEEKLY: DuePeriod("W2026-48", None),
    }
