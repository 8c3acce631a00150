"""fastapi_ws's bounds: sequence numbers a client may name, the chat rate limit, room-list paging."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fastapi_ws.models import Room
from fastapi_ws.router import CHAT_BURST
from tests.support import ServiceProcess, bearer, make_token
from tests.ws.client import ChatClient
from tests.ws.factories import stored_messages

SessionMaker = async_sessionmaker[AsyncSession]

# Far beyond any real activity, so that these rooms head the list whatever else the suite stored.
FUTURE = datetime(2200, 1, 1, tzinfo=UTC)


async def test_resume_beyond_the_rest_bound_closed_4400_not_1013(
    ws_service: ServiceProcess, user_id: uuid.UUID
) -> None:
    token = make_token(user_id)
    for last_seq in (2**31, 10**30, 1_000_000_001):
        refused = await ChatClient.open(ws_service.url, token, last_seq=last_seq)
        assert await refused.closed() == 4400
        assert refused.close_reason == "BAD_LAST_SEQ"
        assert refused.frames.empty()

    at_bound = await ChatClient.open(ws_service.url, token, last_seq=1_000_000_000)
    assert await at_bound.history() == []
    await at_bound.send_chat("hello")
    assert (await at_bound.message())["seq"] == 2
    await at_bound.close()


async def test_chat_rate_limit_shared_by_a_viewers_sockets(
    ws_service: ServiceProcess, db: SessionMaker, user_id: uuid.UUID
) -> None:
    first = await ChatClient.open(ws_service.url, make_token(user_id))
    second = await ChatClient.open(ws_service.url, make_token(user_id))
    await first.history()
    await second.history()
    for n in range(CHAT_BURST):
        await first.send_chat(f"line {n}")
    for client in (first, second):
        frames = [await client.message() for _ in range(CHAT_BURST)]
        assert [f["seq"] for f in frames] == list(range(2, CHAT_BURST + 2))

    await second.send_chat("one more from another tab")

    assert await second.next() == {"type": "error", "detail": "RATE_LIMITED"}
    await second.ws.send('{"type": "ping"}')
    assert await second.next() == {"type": "pong"}
    assert second.close_code is None
    chats = [m.body for m in await stored_messages(db, user_id) if m.kind == "chat"]
    assert chats == [f"line {n}" for n in range(CHAT_BURST)]
    await first.nothing_within(0.3)
    await first.close()
    await second.close()


async def test_chat_rate_limit_survives_reconnecting(
    ws_service: ServiceProcess, db: SessionMaker, user_id: uuid.UUID
) -> None:
    token = make_token(user_id)
    first = await ChatClient.open(ws_service.url, token)
    await first.history()
    for n in range(CHAT_BURST):
        await first.send_chat(f"line {n}")
        await first.message()
    await first.close()

    again = await ChatClient.open(ws_service.url, token)
    await again.history()
    await again.send_chat("after a reconnect")

    assert await again.next() == {"type": "error", "detail": "RATE_LIMITED"}
    assert again.close_code is None
    assert len([m for m in await stored_messages(db, user_id) if m.kind == "chat"]) == CHAT_BURST
    await again.close()


@pytest.fixture
async def future_rooms(db: SessionMaker) -> AsyncIterator[list[uuid.UUID]]:
    """Five rooms active in 2200, newest first (the first is the most recently active)."""
    user_ids = [uuid.uuid4() for _ in range(5)]
    async with db() as session, session.begin():
        session.add_all(
            Room(user_id=user_id, updated_at=FUTURE - timedelta(minutes=n))
            for n, user_id in enumerate(user_ids)
        )
    yield user_ids
    async with db() as session, session.begin():
        await session.execute(delete(Room).where(Room.user_id.in_(user_ids)))


async def test_rooms_pages_by_cursor_neither_repeat_nor_skip(
    ws_service: ServiceProcess, db: SessionMaker, future_rooms: list[uuid.UUID]
) -> None:
    support = bearer(make_token(superuser=True))
    async with httpx.AsyncClient(base_url=ws_service.url, headers=support) as http:
        first = await http.get("/ws/v1/rooms", params={"limit": 2})
        # A message in the fourth room moves it to the top between the two pages.
        async with db() as session, session.begin():
            await session.execute(
                update(Room)
                .where(Room.user_id == future_rooms[3])
                .values(updated_at=FUTURE + timedelta(minutes=1))
            )
        cursor = first.headers["X-Next-Cursor"]
        second = await http.get("/ws/v1/rooms", params={"limit": 2, "cursor": cursor})

    assert first.status_code == second.status_code == 200
    page_one = [room["user_id"] for room in first.json()]
    page_two = [room["user_id"] for room in second.json()]
    assert page_one == [str(u) for u in future_rooms[:2]]
    assert page_two == [str(future_rooms[2]), str(future_rooms[4])]


@pytest.mark.parametrize("cursor", ["", "abc", "1.2.3", "-5.1", "1" * 18 + ".1", "\u0661.\u0661"])
async def test_rooms_with_malformed_cursor_answered_422(
    ws_service: ServiceProcess, cursor: str
) -> None:
    support = bearer(make_token(superuser=True))
    async with httpx.AsyncClient(base_url=ws_service.url, headers=support) as http:
        response = await http.get("/ws/v1/rooms", params={"cursor": cursor})
    assert response.status_code == 422
