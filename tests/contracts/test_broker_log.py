"""A returned event that aiormq cannot match to its publish is logged without its body."""

import asyncio
import logging
import os
import uuid
from typing import ClassVar

import pytest

from contracts.broker import PublishFailed, make_broker, publish_event
from contracts.events import Event
from tests.support import TcpProxy


class Unrouted(Event):
    """Nothing binds this key, so the broker returns every such (mandatory) message."""

    routing_key: ClassVar[str] = "tests.nobody.listens"

    user_id: uuid.UUID
    title: str


async def test_a_return_after_the_publish_gave_up_is_logged_without_its_body(
    caplog: pytest.LogCaptureFixture, broker_proxy: TcpProxy
) -> None:
    proxy = broker_proxy
    broker = make_broker(os.environ["RABBITMQ_URL"])  # through the proxy
    event = Unrouted(user_id=uuid.uuid4(), title="A viewer's secret pick")
    caplog.set_level(logging.ERROR, logger="aiormq.channel")
    try:
        await broker.connect()
        # Returned in time: the publish fails on the return itself, and nothing is logged.
        with pytest.raises(PublishFailed, match="NO_ROUTE"):
            await publish_event(broker, Unrouted(user_id=uuid.uuid4(), title="-"))
        assert not [r for r in caplog.records if r.name == "aiormq.channel"]
        # Now the broker's return (and ack) wait in the relay until the publish has timed out,
        # so aiormq has forgotten the message when its return arrives.
        proxy.hold()
        with pytest.raises(PublishFailed):
            await publish_event(broker, event, timeout=0.5)
        proxy.release()
        for _ in range(100):
            if any(r.name == "aiormq.channel" for r in caplog.records):
                break
            await asyncio.sleep(0.02)
    finally:
        proxy.release()
        await broker.stop()
    logged = [r.getMessage() for r in caplog.records if r.name == "aiormq.channel"]
    assert logged, "aiormq did not log the unmatched return"
    for line in logged:
        assert str(event.user_id) not in line
        assert "secret pick" not in line
        assert str(event.event_id) in line
        assert "tests.nobody.listens" in line
