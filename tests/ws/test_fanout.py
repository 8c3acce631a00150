"""Delivery to every socket of a room: several tabs, several fastapi_ws processes, the support team."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from faststream.rabbit import RabbitBroker
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import publish_event
from tests.support import ServiceProcess, bearer, make_token
from tests.ws.client import ChatClient
from tests.ws.conftest import start_ws
from tests.ws.factories import (
    create_recommendations,
    create_user_verified,
    titles_of,
    wait_for_messages,
)

SessionMaker = async_sessionmaker[AsyncSession]


@pytest.fixture
async def second_ws() -> AsyncIterator[ServiceProcess]:
    proc = await start_ws()
    yield proc
    proc.stop()


async def test_every_tab_receives_every_message(
    ws_service: ServiceProcess, publisher: RabbitBroker, user_id: uuid.UUID
) -> None:
    tabs = [await ChatClient.open(ws_service.url, make_token(user_id)) for _ in range(3)]
    for tab in tabs:
        await tab.history()

    await tabs[0].send_chat("from tab one")
    await publish_event(publisher, create_recommendations(user_id, ("Alien",)))

    for tab in tabs:
        frames = [await tab.message(), await tab.message()]
        assert [f["seq"] for f in frames] == [2, 3]
        by_kind = {f["kind"]: f for f in frames}
        assert by_kind["chat"]["body"] == "from tab one"
        assert titles_of(by_kind["recommendations"]) == ["Alien"]
        await tab.close()


async def test_two_processes_both_deliver_to_their_sockets(
    ws_service: ServiceProcess,
    second_ws: ServiceProcess,
    publisher: RabbitBroker,
    user_id: uuid.UUID,
) -> None:
    on_first = await ChatClient.open(ws_service.url, make_token(user_id))
    on_second = await ChatClient.open(second_ws.url, make_token(user_id))
    await on_first.history()
    await on_second.history()

    # Either process may consume each event; both sockets get all of them, in order.
    for title in ("Alien", "Heat", "Brazil", "Ran"):
        await publish_event(publisher, create_recommendations(user_id, (title,)))
    await on_second.send_chat("typed in the second process's tab")

    for client in (on_first, on_second):
        frames = [await client.message() for _ in range(5)]
        assert [f["seq"] for f in frames] == [2, 3, 4, 5, 6]
        assert sorted(f["body"] for f in frames if f["kind"] == "chat") == [
            "typed in the second process's tab"
        ]
        assert sorted(t for f in frames for t in titles_of(f)) == ["Alien", "Brazil", "Heat", "Ran"]
        await client.close()


async def test_support_lists_rooms_opens_one_and_answers(
    ws_service: ServiceProcess, publisher: RabbitBroker, db: SessionMaker, user_id: uuid.UUID
) -> None:
    await publish_event(publisher, create_user_verified(user_id, full_name="Grace"))
    await wait_for_messages(db, user_id, 1)
    viewer = await ChatClient.open(ws_service.url, make_token(user_id))
    await viewer.history()
    support_token = make_token(superuser=True)

    async with httpx.AsyncClient(base_url=ws_service.url) as http:
        response = await http.get("/ws/v1/rooms", headers=bearer(support_token))
    assert response.status_code == 200
    mine = [room for room in response.json() if room["user_id"] == str(user_id)]
    assert [(r["full_name"], r["last_seq"]) for r in mine] == [("Grace", 1)]

    support = await ChatClient.open(ws_service.url, support_token, room_user_id=user_id)
    assert [m["seq"] for m in await support.history()] == [1]
    await viewer.send_chat("My picks look odd")
    assert (await support.message())["seq"] == 2
    await support.send_chat("Let me check that for you")
    assert (await support.message())["seq"] == 3

    question, answer = await viewer.message(), await viewer.message()
    assert (question["seq"], question["author"], question["body"]) == (
        2,
        "viewer",
        "My picks look odd",
    )
    assert (answer["seq"], answer["author"], answer["body"]) == (
        3,
        "support",
        "Let me check that for you",
    )
    await viewer.close()
    await support.close()
