"""Account changes (address, password, role) against reset links, tokens and concurrent requests."""

import asyncio
import uuid
from typing import Any

import jwt
import pytest
from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fastapi_auth.models import User
from fastapi_auth.security import PasswordHasher
from fastapi_auth.service import MAIL_COOLDOWN_KEY
from fastapi_auth.users import UserDatabase, UserManager
from tests.auth.helpers import (
    PASSWORD,
    EventTap,
    create_superuser,
    login,
    new_email,
    outbox_count,
    register,
    reset_token_of,
    whoami,
)
from tests.support import bearer

REVOKED = {"detail": "TOKEN_REVOKED"}
BAD_RESET_TOKEN = {"detail": "RESET_PASSWORD_BAD_TOKEN"}
NEW_PASSWORD = "a-brand-new-passphrase-7"
# A bound on waiting for the other request to reach its pause, not a timing assertion.
PAUSE_TIMEOUT = 10


async def request_reset(client: AsyncClient, events: EventTap, user_id: str, email: str) -> str:
    asked = await client.post("/auth/v1/forgot-password", json={"email": email})
    assert asked.status_code == 202
    reset = await events.wait_for("auth.password.reset_requested", user_id=user_id, email=email)
    return reset_token_of(reset["reset_url"])


async def signed_in(client: AsyncClient) -> tuple[str, str]:
    """A new user's address and access token."""
    email = new_email()
    await register(client, email)
    return email, await login(client, email)


async def row_of(sessions: async_sessionmaker[AsyncSession], user_id: str) -> User:
    async with sessions() as session:
        user = await session.scalar(select(User).where(User.id == uuid.UUID(user_id)))
    assert user is not None
    return user


async def test_reset_link_is_void_once_the_address_has_changed(
    client: AsyncClient, events: EventTap, redis: Redis
) -> None:
    email, moved = new_email(), new_email()
    user = await register(client, email)
    old_link = await request_reset(client, events, user["id"], email)
    token = await login(client, email)
    changed = await client.patch("/auth/v1/users/me", json={"email": moved}, headers=bearer(token))
    assert changed.status_code == 200, changed.text

    # Whoever reads the old mailbox cannot take the account over with the link sent there.
    response = await client.post(
        "/auth/v1/reset-password", json={"token": old_link, "password": NEW_PASSWORD}
    )

    assert (response.status_code, response.json()) == (400, BAD_RESET_TOKEN)
    await login(client, moved)  # the password is unchanged
    # A link sent to the new address works.
    await redis.delete(MAIL_COOLDOWN_KEY.format(kind="reset", user_id=user["id"]))
    new_link = await request_reset(client, events, user["id"], moved)
    done = await client.post(
        "/auth/v1/reset-password", json={"token": new_link, "password": NEW_PASSWORD}
    )
    assert done.status_code == 200, done.text
    await login(client, moved, NEW_PASSWORD)


async def test_demoting_a_superuser_revokes_their_tokens(
    client: AsyncClient,
    protected: AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    events: EventTap,
) -> None:
    admin = await create_superuser(client, sessions)
    demoted = await create_superuser(client, sessions)
    demoted_id = jwt.decode(demoted, options={"verify_signature": False})["sub"]
    assert (await protected.get("/protected/admin", headers=bearer(demoted))).status_code == 200

    response = await client.patch(
        f"/auth/v1/users/{demoted_id}", json={"is_superuser": False}, headers=bearer(admin)
    )

    assert response.status_code == 200, response.text
    assert response.json()["is_superuser"] is False
    assert await whoami(protected, demoted) == (401, REVOKED)
    revoked = await events.wait_for("auth.tokens.revoked", user_id=demoted_id)
    assert (revoked["jti"], revoked["not_before"] is not None) == (None, True)
    assert (await whoami(protected, admin))[0] == 200


async def test_confirming_the_old_address_during_a_change_leaves_the_new_one_unconfirmed(
    client: AsyncClient,
    events: EventTap,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    email, moved = new_email(), new_email()
    user = await register(client, email)
    code = await events.confirm_code(user["id"])
    token = await login(client, email)
    change = UserManager._update

    # The old address's link is opened after the change loaded the user, before it updates.
    async def confirm_first(manager: UserManager, loaded: User, update: dict[str, Any]) -> User:
        if "email" in update:
            opened = await client.get(f"/auth/v1/s/{code}")
            assert opened.status_code == 303
        return await change(manager, loaded, update)

    monkeypatch.setattr(UserManager, "_update", confirm_first)

    changed = await client.patch("/auth/v1/users/me", json={"email": moved}, headers=bearer(token))

    assert changed.status_code == 200, changed.text
    assert (changed.json()["email"], changed.json()["is_verified"]) == (moved, False)
    row = await row_of(sessions, user["id"])
    assert (row.email, row.is_verified) == (moved, False)
    registered = "auth.user.registered"
    assert await outbox_count(sessions, registered, user_id=user["id"], email=moved) == 1


async def test_changing_the_letter_case_of_ones_address_keeps_it_confirmed(
    client: AsyncClient, events: EventTap, sessions: async_sessionmaker[AsyncSession]
) -> None:
    email, taken = new_email(), new_email()
    await register(client, taken)
    user = await register(client, email)
    opened = await client.get(f"/auth/v1/s/{await events.confirm_code(user['id'])}")
    assert opened.status_code == 303
    token = await login(client, email)
    recased = email.capitalize()

    changed = await client.patch(
        "/auth/v1/users/me", json={"email": recased}, headers=bearer(token)
    )

    assert changed.status_code == 200, changed.text
    assert (changed.json()["email"], changed.json()["is_verified"]) == (recased, True)
    registered = "auth.user.registered"
    assert await outbox_count(sessions, registered, user_id=user["id"], email=recased) == 0
    # Someone else's address stays refused in any letter case.
    refused = await client.patch(
        "/auth/v1/users/me", json={"email": taken.capitalize()}, headers=bearer(token)
    )
    assert (refused.status_code, refused.json()) == (
        400,
        {"detail": "UPDATE_USER_EMAIL_ALREADY_EXISTS"},
    )
    await login(client, recased)


async def test_login_that_read_the_user_before_a_password_change_gets_a_revoked_token(
    client: AsyncClient, protected: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    email, token = await signed_in(client)
    checked, resume = asyncio.Event(), asyncio.Event()
    check = PasswordHasher.verify_and_update_async

    # The login checks the old password, then waits while the change commits.
    async def check_then_wait(
        hasher: PasswordHasher, password: str, hashed: str
    ) -> tuple[bool, str | None]:
        result = await check(hasher, password, hashed)
        checked.set()
        await resume.wait()
        return result

    monkeypatch.setattr(PasswordHasher, "verify_and_update_async", check_then_wait)
    in_flight = asyncio.create_task(
        client.post("/auth/v1/jwt/login", data={"username": email, "password": PASSWORD})
    )
    await asyncio.wait_for(checked.wait(), PAUSE_TIMEOUT)
    changed = await client.patch(
        "/auth/v1/users/me", json={"password": NEW_PASSWORD}, headers=bearer(token)
    )
    assert changed.status_code == 200, changed.text
    resume.set()

    response = await in_flight

    assert response.status_code == 200
    assert await whoami(protected, response.json()["access_token"]) == (401, REVOKED)


async def test_login_while_a_password_change_commits_gets_a_revoked_token(
    client: AsyncClient, protected: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    email, token = await signed_in(client)
    cut_off, commit = asyncio.Event(), asyncio.Event()
    write = UserDatabase.update

    # The change has recorded its revocation cut-off and waits before it commits.
    async def wait_then_write(db: UserDatabase, user: User, update: dict[str, Any]) -> User:
        if "hashed_password" in update and not cut_off.is_set():
            cut_off.set()
            await commit.wait()
        return await write(db, user, update)

    monkeypatch.setattr(UserDatabase, "update", wait_then_write)
    in_flight = asyncio.create_task(
        client.patch("/auth/v1/users/me", json={"password": NEW_PASSWORD}, headers=bearer(token))
    )
    await asyncio.wait_for(cut_off.wait(), PAUSE_TIMEOUT)
    racing = await login(client, email)  # reads the row before the new password is committed
    commit.set()

    changed = await in_flight

    assert changed.status_code == 200, changed.text
    assert await whoami(protected, racing) == (401, REVOKED)
