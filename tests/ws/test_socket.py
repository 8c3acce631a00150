"""The chat socket against a running fastapi_ws: live pushes, resume, isolation, liveness, revocation."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from faststream.rabbit import RabbitBroker
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.broker import publish_event
from contracts.events import TokensRevoked
from contracts.tokens import REVOKED_JTI_KEY
from tests.support import ServiceProcess, bearer, make_token
from tests.ws.client import ChatClient, close_after, refused_status
from tests.ws.factories import (
    create_recommendations,
    stored_messages,
    titles_of,
    wait_for_messages,
)

SessionMaker = async_sessionmaker[AsyncSession]


def jti_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(os.environ["REDIS_URL"])
    yield client
    await client.aclose()


async def test_recommendations_pushed_live_to_open_socket(
    ws_service: ServiceProcess, publisher: RabbitBroker, user_id: uuid.UUID
) -> None:
    client = await ChatClient.open(ws_service.url, make_token(user_id))
    [welcome] = await client.history()
    assert (welcome["seq"], welcome["kind"]) == (1, "system")

    await publish_event(publisher, create_recommendations(user_id, ("Alien", "Heat")))

    frame = await client.message()
    assert set(frame) == {"type", "seq", "kind", "author", "created_at", "body", "items"}
    assert (frame["seq"], frame["kind"], frame["body"]) == (
        2,
        "recommendations",
        "New picks for you: 2 films.",
    )
    assert frame["items"][0] == {
        "movie_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "Alien")),
        "title": "Alien",
        "score": 9.5,
        "reason": "Viewers whose ratings resemble yours loved it",
    }
    await client.close()


async def test_recommendations_for_closed_socket_arrive_in_history(
    ws_service: ServiceProcess, publisher: RabbitBroker, db: SessionMaker, user_id: uuid.UUID
) -> None:
    await publish_event(publisher, create_recommendations(user_id, ("Alien",)))
    await wait_for_messages(db, user_id, 2)

    client = await ChatClient.open(ws_service.url, make_token(user_id))
    history = await client.history()
    assert [(m["seq"], m["kind"]) for m in history] == [(1, "system"), (2, "recommendations")]
    assert titles_of(history[1]) == ["Alien"]
    await client.close()


async def test_resume_gets_exactly_the_missed_messages_in_order(
    ws_service: ServiceProcess, publisher: RabbitBroker, db: SessionMaker, user_id: uuid.UUID
) -> None:
    token = make_token(user_id)
    client = await ChatClient.open(ws_service.url, token)
    await client.history()
    await client.send_chat("first")
    assert (await client.message())["seq"] == 2
    await client.close()

    for title in ("Alien", "Heat", "Brazil"):
        await publish_event(publisher, create_recommendations(user_id, (title,)))
    await wait_for_messages(db, user_id, 5)

    client = await ChatClient.open(ws_service.url, token, last_seq=2)
    missed = await client.history()
    assert [m["seq"] for m in missed] == [3, 4, 5]
    assert sorted(titles_of(m)[0] for m in missed) == ["Alien", "Brazil", "Heat"]
    await client.send_chat("back again")
    frame = await client.message()
    assert (frame["seq"], frame["kind"], frame["author"], frame["body"]) == (
        6,
        "chat",
        "viewer",
        "back again",
    )
    await client.nothing_within(0.3)
    await client.close()


async def test_history_without_resume_is_the_newest_messages(
    ws_service: ServiceProcess, user_id: uuid.UUID
) -> None:
    client = await ChatClient.open(ws_service.url, make_token(user_id))
    await client.history()
    for n in range(6):
        await client.send_chat(f"line {n}")
        await client.message()
    await client.close()

    client = await ChatClient.open(ws_service.url, make_token(user_id))
    history = await client.history()
    # CHAT_HISTORY_LIMIT is 5 in the suite.
    assert [m["seq"] for m in history] == [3, 4, 5, 6, 7]
    await client.close()


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "NOT_AUTHENTICATED"),
        ("", "NOT_AUTHENTICATED"),
        ("not.a.token", "TOKEN_INVALID"),
        ("expired", "TOKEN_EXPIRED"),
        ("wrong-audience", "TOKEN_INVALID"),
    ],
)
async def test_socket_with_bad_token_closed_4401(
    ws_service: ServiceProcess, token: str | None, reason: str
) -> None:
    if token == "expired":
        token = make_token(lifetime=timedelta(seconds=-5))
    elif token == "wrong-audience":
        token = make_token(audience="someone-else")
    client = await ChatClient.open(ws_service.url, token)
    assert await client.closed() == 4401
    assert client.close_reason == reason
    assert client.frames.empty()


async def test_socket_with_revoked_token_closed_4401(
    ws_service: ServiceProcess, redis: Redis, user_id: uuid.UUID
) -> None:
    token = make_token(user_id)
    await redis.set(REVOKED_JTI_KEY.format(jti=jti_of(token)), "1", ex=60)
    client = await ChatClient.open(ws_service.url, token)
    assert await client.closed() == 4401
    assert client.close_reason == "TOKEN_REVOKED"


async def test_socket_without_auth_frame_closed_after_timeout(ws_service: ServiceProcess) -> None:
    assert await close_after(ws_service.url, []) == (4401, "AUTH_TIMEOUT")


async def test_first_frame_other_than_auth_closed_4400(ws_service: ServiceProcess) -> None:
    chat = {"type": "chat", "text": "hi"}
    assert await close_after(ws_service.url, [chat]) == (4400, "AUTH_EXPECTED")


async def test_foreign_origin_refused_before_handshake(ws_service: ServiceProcess) -> None:
    assert await refused_status(ws_service.url, "http://evil.example") == 403


async def test_viewer_cannot_open_another_viewers_room(
    ws_service: ServiceProcess, user_id: uuid.UUID
) -> None:
    owner = await ChatClient.open(ws_service.url, make_token(user_id))
    await owner.history()

    intruder = await ChatClient.open(ws_service.url, make_token(), room_user_id=user_id)
    assert await intruder.closed() == 4403
    assert intruder.close_reason == "FORBIDDEN"
    assert intruder.frames.empty()
    async with httpx.AsyncClient(base_url=ws_service.url) as http:
        response = await http.get(f"/ws/v1/rooms/{user_id}/messages", headers=bearer(make_token()))
    assert response.status_code == 403
    assert response.json() == {"detail": "FORBIDDEN"}
    await owner.close()


async def test_rooms_list_refused_to_viewers_and_anonymous(ws_service: ServiceProcess) -> None:
    async with httpx.AsyncClient(base_url=ws_service.url) as http:
        anonymous = await http.get("/ws/v1/rooms")
        viewer = await http.get("/ws/v1/rooms", headers=bearer(make_token()))
    assert (anonymous.status_code, anonymous.json()) == (401, {"detail": "NOT_AUTHENTICATED"})
    assert (viewer.status_code, viewer.json()) == (403, {"detail": "FORBIDDEN"})


async def test_superuser_opens_unknown_room_closed_4404(ws_service: ServiceProcess) -> None:
    support = await ChatClient.open(
        ws_service.url, make_token(superuser=True), room_user_id=uuid.uuid4()
    )
    assert await support.closed() == 4404


async def test_tokens_revoked_event_closes_that_tokens_socket(
    ws_service: ServiceProcess, publisher: RabbitBroker, user_id: uuid.UUID
) -> None:
    logged_out, other_tab = make_token(user_id), make_token(user_id)
    first = await ChatClient.open(ws_service.url, logged_out)
    second = await ChatClient.open(ws_service.url, other_tab)
    await first.history()
    await second.history()

    await publish_event(publisher, TokensRevoked(user_id=user_id, jti=jti_of(logged_out)))
    assert await first.closed() == 4401
    assert first.close_reason == "TOKEN_REVOKED"
    await second.send_chat("still here")
    assert (await second.message())["body"] == "still here"

    await publish_event(publisher, TokensRevoked(user_id=user_id, not_before=datetime.now(UTC)))
    assert await second.closed() == 4401


async def test_revocation_seen_on_a_later_check_closes_socket(
    ws_service: ServiceProcess, redis: Redis, user_id: uuid.UUID
) -> None:
    token = make_token(user_id)
    client = await ChatClient.open(ws_service.url, token)
    await client.history()

    await redis.set(REVOKED_JTI_KEY.format(jti=jti_of(token)), "1", ex=60)
    assert await client.closed() == 4401
    assert client.close_reason == "TOKEN_REVOKED"


async def test_socket_closed_when_token_expires(
    ws_service: ServiceProcess, user_id: uuid.UUID
) -> None:
    client = await ChatClient.open(
        ws_service.url, make_token(user_id, lifetime=timedelta(seconds=2))
    )
    await client.history()
    assert await client.closed() == 4401
    assert client.close_reason == "TOKEN_EXPIRED"


async def test_silent_peer_dropped_and_answering_peer_kept(
    ws_service: ServiceProcess, user_id: uuid.UUID
) -> None:
    answering = await ChatClient.open(ws_service.url, make_token(user_id))
    await answering.history()
    # Reads the server's pings but never answers one (CHAT_HEARTBEAT_TIMEOUT is 1.5 s).
    silent_auth = {"type": "auth", "token": make_token(user_id)}
    assert await close_after(ws_service.url, [silent_auth]) == (4408, "HEARTBEAT_TIMEOUT")
    assert answering.close_code is None
    await answering.send_chat("alive")
    assert (await answering.message())["body"] == "alive"
    await answering.close()


async def test_invalid_chat_text_answered_with_error_frame(
    ws_service: ServiceProcess, user_id: uuid.UUID
) -> None:
    client = await ChatClient.open(ws_service.url, make_token(user_id))
    await client.history()
    await client.send_chat("   ")
    assert await client.next() == {"type": "error", "detail": "INVALID_TEXT"}
    await client.send_chat("x" * 2001)
    assert await client.next() == {"type": "error", "detail": "INVALID_TEXT"}
    await client.ws.send("not json")
    assert await client.next() == {"type": "error", "detail": "BAD_FRAME"}
    await client.close()


async def test_chat_text_with_nul_answered_with_error_frame_and_socket_kept(
    ws_service: ServiceProcess, db: SessionMaker, user_id: uuid.UUID
) -> None:
    client = await ChatClient.open(ws_service.url, make_token(user_id))
    await client.history()

    await client.send_chat("hi\u0000")

    assert await client.next() == {"type": "error", "detail": "INVALID_TEXT"}
    await client.send_chat("hi\nthere")
    assert (await client.message())["body"] == "hi\nthere"
    assert client.close_code is None
    chats = [m.body for m in await stored_messages(db, user_id) if m.kind == "chat"]
    assert chats == ["hi\nthere"]
    await client.close()
