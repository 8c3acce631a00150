"""Confirmation and reset e-mails: content, exactly once, retries through SMTP outages, 5xx."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import pytest
from faststream.rabbit import RabbitBroker

from contracts.broker import EVENTS_EXCHANGE
from contracts.events import PasswordResetRequested, UserRegistered, UserVerified
from notifications_service.config import get_settings
from notifications_service.mailer import message_id
from notifications_service.models import DeliveryStatus, Recipient
from tests.notifications.conftest import (
    Service,
    StartService,
    body,
    create_recipient,
    deliveries,
    publish,
)
from tests.notifications.sink import SmtpSink
from tests.support import TcpProxy, bearer, make_token, wait_for


def registration(**overrides: object) -> UserRegistered:
    user_id = uuid.uuid4()
    values: dict[str, object] = {
        "user_id": user_id,
        "email": f"new-{user_id.hex[:12]}@example.com",
        "full_name": "Ann Viewer",
        "confirm_url": f"http://localhost:8000/auth/v1/s/{user_id.hex[:8]}",
    }
    return UserRegistered.model_validate({**values, **overrides})


async def test_confirmation_email_carries_link_when_user_registers(
    service: Service, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    event = registration()
    await publish(broker, event)

    await _wait_status(service, event.user_id, DeliveryStatus.SENT)
    [message] = smtp_sink.to(event.email)
    assert message["Subject"] == "Confirm your e-mail address"
    assert message["To"] == event.email
    assert message["From"] == "Cinema <no-reply@cinema.local>"
    assert message["Message-ID"] == message_id(
        f"confirmation:{event.event_id}", "no-reply@cinema.local"
    )
    assert message["List-Unsubscribe"] is None
    text = body(message, "plain")
    html = body(message, "html")
    assert "Hello Ann Viewer," in text
    assert event.confirm_url in text
    assert f'<a href="{event.confirm_url}"' in html

    response = await service.client.get(
        "/notifications/v1/history", headers=bearer(make_token(event.user_id))
    )
    assert response.status_code == 200
    [item] = response.json()["items"]
    assert (item["kind"], item["status"], item["attempts"]) == ("confirmation", "sent", 1)


async def test_new_address_gets_the_link_and_digests_move_only_once_it_is_confirmed(
    service: Service, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    viewer, old, new = await _moving_viewer(service)

    # The change's short link (auth sends `auth.user.registered` for the new address).
    await publish(broker, registration(user_id=viewer.user_id, email=new))
    await wait_for(lambda: _arrived(smtp_sink, new))
    assert smtp_sink.to(new)[0]["Subject"] == "Confirm your e-mail address"
    assert await _address(service, viewer.user_id) == (old, True)

    await publish(broker, UserVerified(user_id=viewer.user_id, email=new, full_name="Ann"))

    async def moved() -> bool:
        return await _address(service, viewer.user_id) == (new, True)

    await wait_for(moved)


async def test_the_previous_address_is_told_of_the_change_once(
    service: Service, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    viewer, old, new = await _moving_viewer(service)
    event = registration(user_id=viewer.user_id, email=new, previous_email=old)

    # Twice: a redelivery must not tell the owner twice.
    await publish(broker, event, event)
    await _wait_status(service, viewer.user_id, DeliveryStatus.SENT)
    marker = registration()
    await publish(broker, marker)
    await wait_for(lambda: _arrived(smtp_sink, marker.email))

    [notice] = smtp_sink.to(old)
    [link] = smtp_sink.to(new)
    assert notice["Subject"] == "Your Cinema e-mail address was changed"
    assert link["Subject"] == "Confirm your e-mail address"
    text, html = body(notice, "plain"), body(notice, "html")
    masked_new = "m***@example.com"
    assert masked_new in text
    assert masked_new in html
    # The old address learns where the account went, but not enough to write to it.
    assert new not in text
    assert new not in html
    assert event.confirm_url not in text
    kinds = sorted(d.kind for d in await deliveries(service.sessionmaker, viewer.user_id))
    assert kinds == ["confirmation", "email_changed"]


async def _moving_viewer(service: Service) -> tuple[Recipient, str, str]:
    """A confirmed recipient, their address and the one they move to."""
    async with service.sessionmaker() as session:
        viewer = await create_recipient(session)
    return viewer, viewer.email, f"moved-{viewer.user_id.hex[:12]}@example.com"


async def _address(service: Service, user_id: uuid.UUID) -> tuple[str, bool]:
    async with service.sessionmaker() as session:
        recipient = await session.get(Recipient, user_id)
        assert recipient is not None
        return recipient.email, recipient.is_verified


async def test_reset_email_sent_when_viewer_opted_out_of_digests(
    service: Service, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    async with service.sessionmaker() as session:
        viewer = await create_recipient(session, digest_frequency="off")
        viewer.unsubscribed_at = viewer.created_at
        await session.commit()
    event = PasswordResetRequested(
        user_id=viewer.user_id,
        email=viewer.email,
        reset_url="http://localhost:8000/reset?token=abc",
    )
    await publish(broker, event)

    await wait_for(lambda: _arrived(smtp_sink, viewer.email))
    [message] = smtp_sink.to(viewer.email)
    assert message["Subject"] == "Reset your Cinema password"
    assert "http://localhost:8000/reset?token=abc" in body(message, "plain")
    assert 'href="http://localhost:8000/reset?token=abc"' in body(message, "html")


async def test_redelivered_event_sends_nothing_new(
    service: Service, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    event = registration()
    await publish(broker, event)
    await wait_for(lambda: _arrived(smtp_sink, event.email))

    # The same event again (a redelivery after a lost ack), then a marker processed after it.
    await publish(broker, event, event)
    marker = registration()
    await publish(broker, marker)
    await wait_for(lambda: _arrived(smtp_sink, marker.email))

    async def settled() -> bool:
        return all(
            d.status == DeliveryStatus.SENT
            for d in await deliveries(service.sessionmaker, event.user_id)
        )

    await wait_for(settled)
    assert len(smtp_sink.to(event.email)) == 1
    assert len(await deliveries(service.sessionmaker, event.user_id)) == 1


async def test_malformed_event_goes_to_dead_letter_queue(service: Service) -> None:
    connection = await aio_pika.connect(os.environ["RABBITMQ_URL"])
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE.name)
        await exchange.publish(
            aio_pika.Message(b'{"user_id": "not-a-uuid"}', message_id="bad-1"),
            routing_key=UserRegistered.routing_key,
        )
        dead = await channel.declare_queue("notifications.events.dead", passive=True)

        async def dead_lettered() -> bool:
            return (
                await channel.declare_queue(dead.name, passive=True)
            ).declaration_result.message_count == 1

        await wait_for(dead_lettered)
        message = await dead.get(timeout=5)
        assert message.body == b'{"user_id": "not-a-uuid"}'
        await message.ack()


async def test_email_retried_through_smtp_outage_then_delivered(
    start_service: StartService, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    event = registration()
    async with _outage(start_service, broker, event, "127.0.0.1", smtp_sink.port, "SMTP_PORT") as (
        service,
        proxy,
    ):

        async def waiting() -> bool:
            rows = await deliveries(service.sessionmaker, event.user_id)
            return bool(rows) and rows[0].last_error is not None

        await wait_for(waiting)
        [row] = await deliveries(service.sessionmaker, event.user_id)
        # The server's outage is not the e-mail's fault: no attempt is charged.
        assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 0)
        assert "Connect" in (row.last_error or "") or "refused" in (row.last_error or "")
        assert smtp_sink.to(event.email) == []

        await proxy.restore()
        await wait_for(lambda: _arrived(smtp_sink, event.email))
        await _wait_status(service, event.user_id, DeliveryStatus.SENT)
        assert len(smtp_sink.to(event.email)) == 1
        [row] = await deliveries(service.sessionmaker, event.user_id)
        assert row.attempts == 1


@asynccontextmanager
async def _outage(
    start_service: StartService,
    broker: RabbitBroker,
    event: UserRegistered,
    host: str,
    port: int,
    setting: str,
) -> AsyncIterator[tuple[Service, TcpProxy]]:
    """The service reaching `host:port` through a proxy, cut before `event` is published."""
    proxy = TcpProxy(host, port)
    await proxy.start()
    try:
        async with start_service(**{setting: str(proxy.port)}) as service:
            await proxy.cut()
            await publish(broker, event)
            yield service, proxy
    finally:
        await proxy.close()


async def test_temporary_smtp_reply_retried_then_delivered(
    service: Service, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    event = registration()
    smtp_sink.script[event.email] = ["451 4.3.0 Try again later", "452 4.3.1 Out of storage"]
    await publish(broker, event)

    await _wait_status(service, event.user_id, DeliveryStatus.SENT)
    [row] = await deliveries(service.sessionmaker, event.user_id)
    assert row.attempts == 3
    assert smtp_sink.attempts[event.email] == 3
    assert len(smtp_sink.to(event.email)) == 1


async def test_permanent_smtp_failure_not_retried(
    service: Service, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    event = registration()
    smtp_sink.script[event.email] = ["550 5.1.1 No such user", "550 5.1.1 No such user"]
    await publish(broker, event)

    await _wait_status(service, event.user_id, DeliveryStatus.FAILED)
    # Later e-mails go through while the failed one stays failed, tried once.
    marker = registration()
    await publish(broker, marker)
    await wait_for(lambda: _arrived(smtp_sink, marker.email))
    [row] = await deliveries(service.sessionmaker, event.user_id)
    assert (row.status, row.attempts) == (DeliveryStatus.FAILED, 1)
    assert row.last_error == "550 5.1.1 No such user"
    assert smtp_sink.attempts[event.email] == 1


async def _arrived(sink: SmtpSink, address: str) -> bool:
    return bool(sink.to(address))


async def _wait_status(service: Service, user_id: uuid.UUID, status: DeliveryStatus) -> None:
    """Until every e-mail of the viewer has `status`; on a timeout the message shows each
    one's state, or that none was recorded (the event never reached the consumer)."""

    async def reached() -> bool:
        rows = await deliveries(service.sessionmaker, user_id)
        return bool(rows) and all(row.status == status for row in rows)

    async def state() -> list[tuple[object, ...]]:
        return [
            (row.kind, row.status, row.attempts, row.last_error, row.claimed_until)
            for row in await deliveries(service.sessionmaker, user_id)
        ]

    await wait_for(reached, state=state)


async def test_event_held_through_database_outage_then_mailed(
    start_service: StartService,
    broker: RabbitBroker,
    smtp_sink: SmtpSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = get_settings()
    event = registration()
    async with _outage(
        start_service,
        broker,
        event,
        settings.postgres_host,
        settings.postgres_port,
        "POSTGRES_PORT",
    ) as (service, proxy):

        async def waiting_out_outage() -> bool:
            return any("database unavailable" in r.getMessage() for r in caplog.records)

        await wait_for(waiting_out_outage)
        await proxy.restore()
        await wait_for(lambda: _arrived(smtp_sink, event.email), timeout=20)
        assert len(smtp_sink.to(event.email)) == 1
        response = await service.client.get("/notifications/ready")
        assert response.status_code == 200
    assert await _dead_letters() == 0


async def _dead_letters() -> int:
    connection = await aio_pika.connect(os.environ["RABBITMQ_URL"])
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("notifications.events.dead", passive=True)
        return int(queue.declaration_result.message_count or 0)
