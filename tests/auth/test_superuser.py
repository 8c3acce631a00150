"""The first superuser comes from FIRST_SUPERUSER_* at start-up, once, verified."""

import jwt
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fastapi_auth.models import User
from tests.auth.helpers import EventTap, login, new_email, running_auth
from tests.support import bearer, wait_for

ADMIN_PASSWORD = "admin-passphrase-for-tests-1"


async def users_with_email(sessions: async_sessionmaker[AsyncSession], email: str) -> list[User]:
    async with sessions() as session:
        return list(await session.scalars(select(User).where(func.lower(User.email) == email)))


async def test_first_superuser_is_created_once_across_restarts(
    monkeypatch: pytest.MonkeyPatch,
    sessions: async_sessionmaker[AsyncSession],
    events: EventTap,
) -> None:
    email = new_email()
    env = {"first_superuser_email": email, "first_superuser_password": ADMIN_PASSWORD}

    for _ in range(2):
        async with running_auth(monkeypatch, **env) as client:

            async def created() -> bool:
                return len(await users_with_email(sessions, email)) == 1

            await wait_for(created)
            token = await login(client, email, ADMIN_PASSWORD)
            me = (await client.get("/auth/v1/users/me", headers=bearer(token))).json()
            assert (me["is_superuser"], me["is_verified"], me["is_active"]) == (True, True, True)
            assert jwt.decode(token, options={"verify_signature": False})["is_superuser"] is True

    (admin,) = await users_with_email(sessions, email)
    verified = await events.wait_for("auth.user.verified", user_id=str(admin.id))
    assert verified["email"] == email
    assert events.matching("auth.user.registered", user_id=str(admin.id)) == []
