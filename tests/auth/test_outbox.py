"""The outbox keeps events while the broker is away and relays each exactly once when it is back."""

import asyncio
import logging
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import utcnow
from fastapi_auth.config import Settings
from fastapi_auth.models import OutboxEvent
from tests.auth.helpers import EventTap, StartAuth, register
from tests.support import TcpProxy, wait_for


async def outbox_row(
    sessions: async_sessionmaker[AsyncSession], user_id: str, routing_key: str
) -> OutboxEvent:
    async with sessions() as session:
        row = await session.scalar(
            select(OutboxEvent).where(
                OutboxEvent.routing_key == routing_key,
                OutboxEvent.payload["user_id"].astext == user_id,
            )
        )
    assert row is not None
    return row


async def test_outbox_relays_registration_after_broker_outage(
    start_auth: StartAuth,
    events: EventTap,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker_url = urlsplit(settings.rabbitmq_url.get_secret_value())
    proxy = TcpProxy(broker_url.hostname or "127.0.0.1", broker_url.port or 5672)
    await proxy.start()
    credentials = f"{broker_url.username}:{broker_url.password}"
    through_proxy = broker_url._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}").geturl()
    try:
        client = await start_auth(rabbitmq_url=through_proxy)
        await proxy.cut()

        async def broker_down() -> bool:
            return (await client.get("/auth/ready")).status_code == 503

        await wait_for(broker_down)
        with caplog.at_level(logging.WARNING, logger="fastapi_auth.outbox"):
            user = await register(client)

            async def relay_deferred() -> bool:
                return any(
                    r.name == "fastapi_auth.outbox" and "waits in the outbox" in str(r.msg)
                    for r in caplog.records
                )

            await wait_for(relay_deferred, timeout=15)
        pending = await outbox_row(sessions, user["id"], "auth.user.registered")
        assert pending.sent_at is None
        assert events.matching("auth.user.registered", user_id=user["id"]) == []

        await proxy.restore()

        event = await events.wait_for("auth.user.registered", timeout=20, user_id=user["id"])
        assert event["event_id"] == str(pending.event_id)

        async def marked_sent() -> bool:
            row = await outbox_row(sessions, user["id"], "auth.user.registered")
            return row.sent_at is not None

        await wait_for(marked_sent)
        # Time for a duplicate to show up, were the relay to send one.
        await asyncio.sleep(1.5)
        delivered = [
            message_id
            for key, body, message_id in events.received
            if key == "auth.user.registered" and body["user_id"] == user["id"]
        ]
        assert delivered == [str(pending.event_id)]
    finally:
        await proxy.close()


async def test_outbox_unreadable_row_does_not_block_later_events(
    start_auth: StartAuth, events: EventTap, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bogus_id = uuid.uuid4()
    async with sessions() as session:
        session.add(
            OutboxEvent(
                event_id=bogus_id,
                routing_key="auth.no.such_event",
                payload={},
                created_at=utcnow() - timedelta(minutes=1),
            )
        )
        await session.commit()
    try:
        client = await start_auth()
        user = await register(client)

        await events.wait_for("auth.user.registered", user_id=user["id"])
        async with sessions() as session:
            bogus = await session.get(OutboxEvent, bogus_id)
        assert bogus is not None
        assert bogus.sent_at is None
        assert bogus.attempts >= 1
        assert "KeyError" in (bogus.last_error or "")
        assert bogus.next_attempt_at > utcnow()
    finally:
        async with sessions() as session:
            await session.execute(delete(OutboxEvent).where(OutboxEvent.event_id == bogus_id))
            await session.commit()
