"""Sign-up: the confirmation event and its short link, verification, duplicates under concurrency."""

import asyncio
import uuid

from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.tokens import CONFIRMED_KEY
from fastapi_auth.config import Settings
from fastapi_auth.models import User
from tests.auth.helpers import (
    PASSWORD,
    EventTap,
    code_of,
    login,
    new_email,
    outbox_count,
    register,
)
from tests.support import bearer, wait_for


async def test_register_publishes_link_that_verifies_and_redirects_to_chat(
    client: AsyncClient, events: EventTap, settings: Settings
) -> None:
    email = new_email()
    user = await register(client, email, full_name="Ann Viewer")
    assert user == {
        "id": user["id"],
        "email": email,
        "full_name": "Ann Viewer",
        "is_active": True,
        "is_superuser": False,
        "is_verified": False,
        "created_at": user["created_at"],
    }

    registered = await events.wait_for("auth.user.registered", user_id=user["id"])
    assert registered["email"] == email
    assert registered["full_name"] == "Ann Viewer"
    prefix = f"{settings.public_base_url}/auth/v1/s/"
    assert registered["confirm_url"].startswith(prefix)
    code = code_of(registered["confirm_url"])
    assert len(code) >= 22

    opened = await client.get(f"/auth/v1/s/{code}")
    assert opened.status_code == 303
    assert opened.headers["location"] == "/ws/v1/chat/"
    assert opened.headers["cache-control"] == "no-store"

    verified = await events.wait_for("auth.user.verified", user_id=user["id"])
    assert verified["email"] == email
    assert verified["full_name"] == "Ann Viewer"
    me = await client.get("/auth/v1/users/me", headers=bearer(await login(client, email)))
    assert me.json()["is_verified"] is True


async def test_short_link_used_twice_answers_gone_page(
    client: AsyncClient, events: EventTap, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await register(client)
    code = await events.confirm_code(user["id"])
    assert (await client.get(f"/auth/v1/s/{code}")).status_code == 303

    again = await client.get(f"/auth/v1/s/{code}")
    assert again.status_code == 410
    assert again.headers["content-type"].startswith("text/html")
    assert "This link has already been used" in again.text
    await events.wait_for("auth.user.verified", user_id=user["id"])
    assert await outbox_count(sessions, "auth.user.verified", user_id=user["id"]) == 1


async def test_short_link_unknown_answers_not_found_page(client: AsyncClient) -> None:
    for code in ("no-such-code", "x" * 500, "%F0%9F%8E%AC"):
        response = await client.get(f"/auth/v1/s/{code}")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "This link is not valid" in response.text


async def test_short_link_opened_concurrently_verifies_once(
    client: AsyncClient, events: EventTap, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await register(client)
    code = await events.confirm_code(user["id"])

    answers = await asyncio.gather(*(client.get(f"/auth/v1/s/{code}") for _ in range(5)))

    assert sorted(a.status_code for a in answers) == [303, 410, 410, 410, 410]
    await events.wait_for("auth.user.verified", user_id=user["id"])
    assert await outbox_count(sessions, "auth.user.verified", user_id=user["id"]) == 1


async def test_request_verify_token_sends_new_code_accepted_by_verify(
    client: AsyncClient, events: EventTap
) -> None:
    email = new_email()
    user = await register(client, email)
    first = await events.wait_for("auth.user.registered", user_id=user["id"])

    response = await client.post("/auth/v1/request-verify-token", json={"email": email})
    assert response.status_code == 202

    async def second_link_sent() -> bool:
        return len(events.matching("auth.user.registered", user_id=user["id"])) == 2

    await wait_for(second_link_sent)
    second = events.matching("auth.user.registered", user_id=user["id"])[1]
    assert second["confirm_url"] != first["confirm_url"]
    code = code_of(second["confirm_url"])

    verified = await client.post("/auth/v1/verify", json={"token": code})
    assert verified.status_code == 200
    assert verified.json()["is_verified"] is True
    again = await client.post("/auth/v1/verify", json={"token": code})
    assert again.status_code == 400
    assert again.json() == {"detail": "VERIFY_USER_BAD_TOKEN"}
    stale = await client.get(f"/auth/v1/s/{code_of(first['confirm_url'])}")
    assert stale.status_code == 410


async def test_verify_with_unknown_code_answers_bad_token(client: AsyncClient) -> None:
    response = await client.post("/auth/v1/verify", json={"token": "never-issued"})
    assert response.status_code == 400
    assert response.json() == {"detail": "VERIFY_USER_BAD_TOKEN"}


async def test_register_same_email_twice_answers_already_exists(client: AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    for variant in (email, email.upper()):
        response = await client.post(
            "/auth/v1/register", json={"email": variant, "password": PASSWORD}
        )
        assert response.status_code == 400
        assert response.json() == {"detail": "REGISTER_USER_ALREADY_EXISTS"}


async def test_register_concurrently_one_email_creates_one_user(
    client: AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    email = new_email()
    # Case variants race on the case-insensitive unique index too.
    variants = [email if i % 2 else email.upper() for i in range(20)]

    answers = await asyncio.gather(
        *(
            client.post("/auth/v1/register", json={"email": e, "password": PASSWORD})
            for e in variants
        )
    )

    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [400] * 19
    assert all(
        a.json() == {"detail": "REGISTER_USER_ALREADY_EXISTS"}
        for a in answers
        if a.status_code == 400
    )
    created = next(a.json() for a in answers if a.status_code == 201)
    async with sessions() as session:
        users = await session.scalar(
            select(func.count()).where(func.lower(User.email) == email.lower())
        )
    outbox = await outbox_count(sessions, "auth.user.registered", user_id=created["id"])
    assert users == 1
    assert outbox == 1


async def test_register_ignores_privilege_fields(client: AsyncClient) -> None:
    response = await client.post(
        "/auth/v1/register",
        json={
            "email": new_email(),
            "password": PASSWORD,
            "is_superuser": True,
            "is_verified": True,
        },
    )
    assert response.status_code == 201
    assert response.json()["is_superuser"] is False
    assert response.json()["is_verified"] is False
    assert uuid.UUID(response.json()["id"])


async def test_register_invalid_email_answers_validation_error(client: AsyncClient) -> None:
    response = await client.post(
        "/auth/v1/register", json={"email": "not-an-address", "password": PASSWORD}
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "VALIDATION_ERROR"


async def test_short_link_after_email_change_confirms_nothing(
    client: AsyncClient, events: EventTap
) -> None:
    email, moved = new_email(), new_email()
    user = await register(client, email)
    code = await events.confirm_code(user["id"])
    token = await login(client, email)
    changed = await client.patch("/auth/v1/users/me", json={"email": moved}, headers=bearer(token))
    assert changed.status_code == 200
    # The old address was never confirmed, so it is not told (it may be a stranger's).
    link = await events.wait_for("auth.user.registered", user_id=user["id"], email=moved)
    assert link["previous_email"] is None

    response = await client.get(f"/auth/v1/s/{code}")

    assert response.status_code == 404
    assert "This link is not valid" in response.text
    assert events.matching("auth.user.verified", user_id=user["id"]) == []


async def test_new_address_gets_a_short_link_of_its_own_that_confirms_it(
    client: AsyncClient, events: EventTap
) -> None:
    email, taken, moved = new_email(), new_email(), new_email()
    await register(client, taken)
    user = await register(client, email, full_name="Ann Viewer")
    assert (
        await client.get(f"/auth/v1/s/{await events.confirm_code(user['id'])}")
    ).status_code == 303
    token = await login(client, email)

    # Someone else's address is refused, and the refusal spends no link cooldown.
    refused = await client.patch("/auth/v1/users/me", json={"email": taken}, headers=bearer(token))
    assert refused.status_code == 400, refused.text
    assert refused.json()["detail"] == "UPDATE_USER_EMAIL_ALREADY_EXISTS"
    changed = await client.patch("/auth/v1/users/me", json={"email": moved}, headers=bearer(token))
    assert changed.status_code == 200, changed.text
    assert changed.json()["is_verified"] is False

    link = await events.wait_for("auth.user.registered", user_id=user["id"], email=moved)
    assert link["full_name"] == "Ann Viewer"
    assert link["previous_email"] == email  # confirmed, so notifications tells it
    assert events.matching("auth.user.registered", user_id=user["id"], email=taken) == []
    assert (await client.get(f"/auth/v1/s/{code_of(link['confirm_url'])}")).status_code == 303
    verified = await events.wait_for("auth.user.verified", user_id=user["id"], email=moved)
    assert verified["full_name"] == "Ann Viewer"
    me = await client.get("/auth/v1/users/me", headers=bearer(await login(client, moved)))
    assert (me.json()["email"], me.json()["is_verified"]) == (moved, True)


async def test_a_move_away_from_a_confirmed_address_is_told_within_the_link_cooldown(
    client: AsyncClient, events: EventTap, sessions: async_sessionmaker[AsyncSession]
) -> None:
    first, second, third, fourth = new_email(), new_email(), new_email(), new_email()
    user = await register(client, first)
    assert (
        await client.get(f"/auth/v1/s/{await events.confirm_code(user['id'])}")
    ).status_code == 303

    async def move(token: str, email: str) -> None:
        changed = await client.patch(
            "/auth/v1/users/me", json={"email": email}, headers=bearer(token)
        )
        assert changed.status_code == 200, changed.text

    await move(await login(client, first), second)  # spends the link cooldown
    link = await events.wait_for("auth.user.registered", user_id=user["id"], email=second)
    assert (await client.get(f"/auth/v1/s/{code_of(link['confirm_url'])}")).status_code == 303
    await events.wait_for("auth.user.verified", user_id=user["id"], email=second)

    # Within the cooldown, a move away from the confirmed second address is still sent, so
    # that address is told; a move away from the unconfirmed third one waits for the cooldown.
    token = await login(client, second)
    await move(token, third)
    await move(token, fourth)

    link = await events.wait_for("auth.user.registered", user_id=user["id"], email=third)
    assert link["previous_email"] == second
    registered = "auth.user.registered"
    assert await outbox_count(sessions, registered, user_id=user["id"], email=fourth) == 0


async def test_confirmation_is_noted_for_tokens_issued_before_it_and_undone_by_a_new_address(
    client: AsyncClient, events: EventTap, settings: Settings, redis: Redis
) -> None:
    email = new_email()
    user = await register(client, email)
    early = await login(client, email)  # says is_verified: false until it expires
    key = CONFIRMED_KEY.format(user_id=user["id"])
    assert not await redis.exists(key)

    code = await events.confirm_code(user["id"])
    assert (await client.get(f"/auth/v1/s/{code}")).status_code == 303
    assert await redis.exists(key)
    assert 0 < await redis.ttl(key) <= settings.access_token_lifetime_seconds

    # A new address makes the viewer unconfirmed again (fastapi-users), and the note goes.
    changed = await client.patch(
        "/auth/v1/users/me", json={"email": new_email()}, headers=bearer(early)
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["is_verified"] is False
    assert not await redis.exists(key)
