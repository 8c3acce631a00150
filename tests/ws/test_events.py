"""fastapi_ws's consumer of `ws.events` on the real broker: rooms, stored pushes, idempotence."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from faststream.rabbit import RabbitBroker
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import EVENTS_EXCHANGE, dead_letter_queue, publish_event
from fastapi_ws.service import welcome_text
from tests.support import ServiceProcess, bearer, make_token, wait_for
from tests.ws.factories import (
    create_recommendations,
    create_user_verified,
    stored_messages,
    wait_for_messages,
)

SessionMaker = async_sessionmaker[AsyncSession]


async def test_user_verified_creates_room_with_welcome(
    ws_service: ServiceProcess, publisher: RabbitBroker, db: SessionMaker, user_id: uuid.UUID
) -> None:
    await publish_event(publisher, create_user_verified(user_id))

    [welcome] = await wait_for_messages(db, user_id, 1)
    assert (welcome.seq, welcome.kind, welcome.author) == (1, "system", "system")
    assert welcome.body == welcome_text("Ada Viewer")
    async with httpx.AsyncClient(base_url=ws_service.url) as client:
        response = await client.get(
            f"/ws/v1/rooms/{user_id}/messages", headers=bearer(make_token(user_id))
        )
    assert response.status_code == 200
    assert response.json() == [
        {
            "seq": 1,
            "kind": "system",
            "author": "system",
            "created_at": welcome.created_at.isoformat().replace("+00:00", "Z"),
            "body": welcome_text("Ada Viewer"),
            "items": [],
        }
    ]


async def test_recommendations_for_user_without_room_create_it(
    ws_service: ServiceProcess, publisher: RabbitBroker, db: SessionMaker, user_id: uuid.UUID
) -> None:
    await publish_event(publisher, create_recommendations(user_id, ("Alien",)))

    welcome, picks = await wait_for_messages(db, user_id, 2)
    assert (welcome.seq, welcome.kind) == (1, "system")
    assert (picks.seq, picks.kind, picks.body) == (
        2,
        "recommendations",
        "New picks for you: 1 film.",
    )
    assert picks.items == [
        {
            "movie_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "Alien")),
            "title": "Alien",
            "score": 9.5,
            "reason": "Viewers whose ratings resemble yours loved it",
        }
    ]


async def test_redelivered_events_change_nothing(
    ws_service: ServiceProcess, publisher: RabbitBroker, db: SessionMaker, user_id: uuid.UUID
) -> None:
    verified = create_user_verified(user_id)
    picks = create_recommendations(user_id, ("Alien",))
    for event in (verified, verified, picks, picks):
        await publish_event(publisher, event)
    await publish_event(publisher, create_recommendations(user_id, ("Heat",)))

    await wait_for_messages(db, user_id, 3)
    # Every copy is in flight at once (prefetch); a second copy applied would show by now.
    await asyncio.sleep(0.5)
    messages = await stored_messages(db, user_id)
    assert [(m.seq, m.kind) for m in messages] == [
        (1, "system"),
        (2, "recommendations"),
        (3, "recommendations"),
    ]
    assert sorted(m.items[0]["title"] for m in messages[1:]) == ["Alien", "Heat"]


async def test_identical_push_within_window_is_not_repeated(
    ws_service: ServiceProcess, publisher: RabbitBroker, db: SessionMaker, user_id: uuid.UUID
) -> None:
    await publish_event(publisher, create_recommendations(user_id, ("Alien", "Heat")))
    await publish_event(publisher, create_recommendations(user_id, ("Alien", "Heat")))
    await wait_for_messages(db, user_id, 2)
    await asyncio.sleep(0.5)
    assert len(await stored_messages(db, user_id)) == 2

    await publish_event(publisher, create_recommendations(user_id, ("Heat", "Alien")))
    messages = await wait_for_messages(db, user_id, 3)
    assert [[i["title"] for i in m.items] for m in messages] == [
        [],
        ["Alien", "Heat"],
        ["Heat", "Alien"],
    ]


async def test_malformed_event_goes_to_dead_letter_queue(
    ws_service: ServiceProcess, publisher: RabbitBroker
) -> None:
    dead = await publisher.declare_queue(dead_letter_queue("ws.events"))
    await dead.purge()
    marker = uuid.uuid4().hex
    await publisher.publish(
        f'{{"user_id": "not-a-uuid", "marker": "{marker}"}}'.encode(),
        exchange=EVENTS_EXCHANGE,
        routing_key="recom.recommendations.generated",
        mandatory=True,
        persist=True,
    )
    bodies: list[bytes] = []

    async def dead_lettered() -> bool:
        message = await dead.get(no_ack=True, fail=False)
        if message is not None:
            bodies.append(message.body)
        return any(marker.encode() in body for body in bodies)

    await wait_for(dead_lettered, timeout=10, interval=0.1)
