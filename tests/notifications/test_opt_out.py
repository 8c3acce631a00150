"""Opting out stops every recommendation e-mail not yet sent, queued or retried; account ones go."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from faststream.rabbit import RabbitBroker
from httpx import Response
from sqlalchemy import Update, func, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import PasswordResetRequested, RecommendationsGenerated, utcnow
from notifications_service import service as notifications
from notifications_service.config import Settings
from notifications_service.models import Delivery, DeliveryKind, DeliveryStatus, Recipient
from tests.notifications.conftest import (
    FakeRecom,
    Service,
    StartService,
    create_recipient,
    deliveries,
    picks,
    publish,
)
from tests.notifications.sink import SmtpSink
from tests.support import bearer, make_token, wait_for

OPTED_OUT = "viewer opted out"
OPT_OUTS = [{"digest_frequency": "off"}, {"subscribed": False}]


def requested_picks(user_id: uuid.UUID) -> RecommendationsGenerated:
    return RecommendationsGenerated(
        user_id=user_id, items=picks("Alien"), strategy="user-user-cosine", trigger="request"
    )


def reset_request(viewer: Recipient) -> PasswordResetRequested:
    return PasswordResetRequested(
        user_id=viewer.user_id, email=viewer.email, reset_url="http://localhost:8000/reset?t=1"
    )


@contextmanager
def smtp_refusing(sink: SmtpSink, address: str) -> Iterator[None]:
    """The relay answers 4xx for `address` until the block ends (the outage is over)."""
    sink.script[address] = ["451 4.3.0 Try again later"] * 100_000
    try:
        yield
    finally:
        sink.script.pop(address, None)


async def _kinds(db: async_sessionmaker[AsyncSession], user_id: uuid.UUID) -> dict[str, Delivery]:
    return {row.kind: row for row in await deliveries(db, user_id)}


async def _retried(db: async_sessionmaker[AsyncSession], user_id: uuid.UUID, kind: str) -> bool:
    row = (await _kinds(db, user_id)).get(kind)
    return row is not None and row.status == DeliveryStatus.PENDING and row.attempts >= 1


async def _queued(db: async_sessionmaker[AsyncSession], user_id: uuid.UUID, count: int) -> bool:
    rows = await deliveries(db, user_id)
    return len(rows) == count and all(row.status == DeliveryStatus.PENDING for row in rows)


async def _settled(db: async_sessionmaker[AsyncSession], user_id: uuid.UUID) -> bool:
    """No e-mail of the viewer is left to send or to retry."""
    rows = await deliveries(db, user_id)
    unsettled = (DeliveryStatus.PENDING, DeliveryStatus.AWAITING)
    return bool(rows) and all(row.status not in unsettled for row in rows)


async def _outcome(
    db: async_sessionmaker[AsyncSession], user_id: uuid.UUID
) -> dict[str, tuple[str, str | None]]:
    async def state() -> list[tuple[object, ...]]:
        return [(r.kind, r.status, r.attempts, r.last_error) for r in await deliveries(db, user_id)]

    await wait_for(lambda: _settled(db, user_id), timeout=30, state=state)
    rows = await _kinds(db, user_id)
    return {
        kind: (row.status, row.last_error if row.status == DeliveryStatus.SKIPPED else None)
        for kind, row in rows.items()
    }


def _subjects(sink: SmtpSink, address: str) -> list[str]:
    return [str(message["Subject"]) for message in sink.to(address)]


@asynccontextmanager
async def retried_picks(
    service: Service, broker: RabbitBroker, sink: SmtpSink, frequency: str
) -> AsyncIterator[Recipient]:
    """A viewer whose recommendation e-mail (the picks at once for `immediate`, else the
    digest) is being retried while the relay answers 4xx; the outage ends with the block."""
    async with service.sessionmaker() as session:
        viewer = await create_recipient(session, digest_frequency=frequency)
    immediate = frequency == "immediate"
    kind = DeliveryKind.RECOMMENDATIONS if immediate else DeliveryKind.DIGEST
    with smtp_refusing(sink, viewer.email):
        if immediate:
            await publish(broker, requested_picks(viewer.user_id))
        else:
            await _run_digests(service)
        await wait_for(lambda: _retried(service.sessionmaker, viewer.user_id, kind))
        yield viewer


async def _queue_reset_email(service: Service, broker: RabbitBroker, viewer: Recipient) -> None:
    await publish(broker, reset_request(viewer))
    await wait_for(lambda: _queued(service.sessionmaker, viewer.user_id, 2))


async def _put_preferences(service: Service, user_id: uuid.UUID, **values: object) -> Response:
    return await service.client.put(
        "/notifications/v1/preferences", headers=bearer(make_token(user_id)), json=values
    )


async def test_one_click_unsubscribe_stops_retried_recommendations_but_not_account_email(
    service: Service, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    async with retried_picks(service, broker, smtp_sink, "immediate") as viewer:
        await _queue_reset_email(service, broker, viewer)
        rows = await _kinds(service.sessionmaker, viewer.user_id)
        # The List-Unsubscribe link of the very e-mail being retried, as a mail client posts it.
        link = rows[DeliveryKind.RECOMMENDATIONS].unsubscribe_url
        assert link is not None
        response = await service.client.post(
            urlsplit(link).path, data={"List-Unsubscribe": "One-Click"}
        )
        assert (response.status_code, response.json()) == (
            200,
            {"user_id": str(viewer.user_id), "subscribed": False},
        )

    assert await _outcome(service.sessionmaker, viewer.user_id) == {
        DeliveryKind.RECOMMENDATIONS: (DeliveryStatus.SKIPPED, OPTED_OUT),
        DeliveryKind.PASSWORD_RESET: (DeliveryStatus.SENT, None),
    }
    assert _subjects(smtp_sink, viewer.email) == ["Reset your Cinema password"]


@pytest.mark.parametrize("opt_out", OPT_OUTS)
async def test_opting_out_in_preferences_stops_retried_digest_but_not_account_email(
    service: Service,
    broker: RabbitBroker,
    recom: FakeRecom,
    smtp_sink: SmtpSink,
    opt_out: dict[str, object],
) -> None:
    async with retried_picks(service, broker, smtp_sink, "daily") as viewer:
        await _queue_reset_email(service, broker, viewer)
        response = await _put_preferences(service, viewer.user_id, **opt_out)
        assert response.status_code == 200

    assert await _outcome(service.sessionmaker, viewer.user_id) == {
        DeliveryKind.DIGEST: (DeliveryStatus.SKIPPED, OPTED_OUT),
        DeliveryKind.PASSWORD_RESET: (DeliveryStatus.SENT, None),
    }
    assert _subjects(smtp_sink, viewer.email) == ["Reset your Cinema password"]


async def test_switching_daily_to_weekly_keeps_the_retried_digest(
    service: Service, broker: RabbitBroker, recom: FakeRecom, smtp_sink: SmtpSink
) -> None:
    """Not an opt-out: the viewer still wants picks by e-mail, so the one owed goes out."""
    async with retried_picks(service, broker, smtp_sink, "daily") as viewer:
        response = await _put_preferences(service, viewer.user_id, digest_frequency="weekly")
        assert response.status_code == 200

    assert await _outcome(service.sessionmaker, viewer.user_id) == {
        DeliveryKind.DIGEST: (DeliveryStatus.SENT, None)
    }
    assert _subjects(smtp_sink, viewer.email) == ["Your daily film picks"]


async def test_resubscribing_mails_new_picks_but_not_those_skipped_by_the_opt_out(
    start_service: StartService, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    async with start_service(IMMEDIATE_MIN_INTERVAL_SECONDS="0") as service:
        async with retried_picks(service, broker, smtp_sink, "immediate") as viewer:
            for subscribed in (False, True):
                response = await _put_preferences(service, viewer.user_id, subscribed=subscribed)
                assert response.json()["subscribed"] is subscribed
        later = requested_picks(viewer.user_id)
        await publish(broker, later)

        async def later_sent() -> bool:
            return any(
                row.event_id == later.event_id and row.status == DeliveryStatus.SENT
                for row in await deliveries(service.sessionmaker, viewer.user_id)
            )

        await wait_for(later_sent)
        first, second = await deliveries(service.sessionmaker, viewer.user_id)
        assert (first.status, first.last_error) == (DeliveryStatus.SKIPPED, OPTED_OUT)
        assert (second.event_id, second.status) == (later.event_id, DeliveryStatus.SENT)
        assert _subjects(smtp_sink, viewer.email) == ["New film picks for you"]


async def _run_digests(service: Service) -> None:
    response = await service.client.post(
        "/notifications/v1/digests/run", headers=bearer(make_token(superuser=True))
    )
    assert (response.status_code, response.json()) == (200, {"requested": 1})


# Below, no service runs: the test plays the sender, so that it can hold a lease while the
# viewer opts out.


async def _queue_picks(
    db: async_sessionmaker[AsyncSession], settings: Settings
) -> tuple[Recipient, PasswordResetRequested]:
    """An `immediate` viewer with a recommendations e-mail and a reset e-mail pending."""
    async with db() as session:
        viewer = await create_recipient(session, digest_frequency="immediate")
    reset = reset_request(viewer)
    async with db() as session:
        assert await notifications.record_recommendations(
            session, requested_picks(viewer.user_id), settings
        )
    async with db() as session:
        assert await notifications.record_reset_request(session, reset, settings)
    return viewer, reset


async def _claim(db: async_sessionmaker[AsyncSession], settings: Settings) -> list[Delivery]:
    async with db() as session:
        return await notifications.claim_due(session, settings, limit=10)


async def _make_due(db: async_sessionmaker[AsyncSession]) -> None:
    """As if the backoff and any lease had run out."""
    async with db() as session:
        await session.execute(
            update(Delivery).values(
                next_attempt_at=func.now() - timedelta(minutes=1),
                claimed_until=None,
            )
        )
        await session.commit()


async def _only_reset_claimed(
    db: async_sessionmaker[AsyncSession], settings: Settings, reset: PasswordResetRequested
) -> Delivery:
    """A sender claims the reset e-mail alone; returns the recommendations one, skipped."""
    [claimed] = await _claim(db, settings)
    assert (claimed.kind, claimed.event_id) == (DeliveryKind.PASSWORD_RESET, reset.event_id)
    skipped = (await _kinds(db, reset.user_id))[DeliveryKind.RECOMMENDATIONS]
    assert (skipped.status, skipped.last_error) == (DeliveryStatus.SKIPPED, OPTED_OUT)
    return skipped


# How the sender's attempt, under way at the opt-out, ends (short of the server's 250).
ATTEMPT_ENDS: dict[str, Callable[[Delivery, Settings], Update]] = {
    "4xx": lambda row, settings: notifications.defer(row, "451 4.3.0 Try later", settings)[0],
    "5xx": lambda row, _: notifications.finish(row.delivery_id, DeliveryStatus.FAILED, "550"),
    "server down": lambda row, _: notifications.postpone([row.delivery_id], utcnow()),
}


@pytest.mark.parametrize("attempt_end", ATTEMPT_ENDS)
async def test_recommendation_leased_when_viewer_unsubscribes_is_never_retried(
    db: async_sessionmaker[AsyncSession], service_settings: Settings, attempt_end: str
) -> None:
    viewer, reset = await _queue_picks(db, service_settings)
    leased = {row.kind: row for row in await _claim(db, service_settings)}
    assert set(leased) == {DeliveryKind.RECOMMENDATIONS, DeliveryKind.PASSWORD_RESET}

    async with db() as session:
        assert await notifications.unsubscribe(session, viewer.user_id) is not None
    async with db() as session:
        statement = ATTEMPT_ENDS[attempt_end](
            leased[DeliveryKind.RECOMMENDATIONS], service_settings
        )
        await session.execute(statement)
        await session.commit()

    await _make_due(db)
    await _only_reset_claimed(db, service_settings, reset)


async def test_recommendation_of_viewer_opted_out_elsewhere_is_skipped_when_due(
    db: async_sessionmaker[AsyncSession], service_settings: Settings
) -> None:
    """Queued before the opt-out marked queued e-mails, or opted out by a path that does not:
    the sender still checks the viewer's preference when it takes the e-mail."""
    viewer, reset = await _queue_picks(db, service_settings)
    async with db() as session:
        await session.execute(
            update(Recipient)
            .where(Recipient.user_id == viewer.user_id)
            .values(digest_frequency="off")
        )
        await session.commit()

    skipped = await _only_reset_claimed(db, service_settings, reset)
    assert skipped.claimed_until is None
