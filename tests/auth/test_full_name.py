"""Full names: one line of text; a control character is a 422, never a database error."""

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fastapi_auth.models import User
from tests.auth.helpers import PASSWORD, login, new_email, outbox_count, register
from tests.support import bearer

CONTROL_ERROR = {
    "loc": ["body", "full_name"],
    "msg": "Text must not contain control characters (U+0000-U+001F, U+007F-U+009F)",
    "type": "string_control_character",
}
# NUL, which PostgreSQL cannot store; a line break that would start a new e-mail header line;
# an escape sequence and a C1 control that have no place in a name shown to people.
BAD_NAMES = ["A\u0000", "Ann\nBcc: x@example.com", "\u001b[31mAnn", "Ann\u0090Lee"]


async def users_with_email(sessions: async_sessionmaker[AsyncSession], email: str) -> int:
    async with sessions() as session:
        query = select(func.count()).where(func.lower(User.email) == email.lower())
        return int(await session.scalar(query) or 0)


@pytest.mark.parametrize("full_name", BAD_NAMES)
async def test_register_with_control_character_in_full_name_is_422_and_stores_nothing(
    client: AsyncClient, sessions: async_sessionmaker[AsyncSession], full_name: str
) -> None:
    email = new_email()

    response = await client.post(
        "/auth/v1/register", json={"email": email, "password": PASSWORD, "full_name": full_name}
    )

    assert response.status_code == 422
    assert response.json() == {"detail": "VALIDATION_ERROR", "errors": [CONTROL_ERROR]}
    assert await users_with_email(sessions, email) == 0
    assert await outbox_count(sessions, "auth.user.registered", email=email) == 0


async def test_register_strips_surrounding_whitespace_of_full_name(client: AsyncClient) -> None:
    user = await register(client, full_name="  Ann Viewer\n")

    assert user["full_name"] == "Ann Viewer"


@pytest.mark.parametrize("full_name", BAD_NAMES)
async def test_update_me_with_control_character_in_full_name_is_422_and_keeps_name(
    client: AsyncClient, sessions: async_sessionmaker[AsyncSession], full_name: str
) -> None:
    email = new_email()
    user = await register(client, email, full_name="Ann Viewer")
    token = await login(client, email)

    response = await client.patch(
        "/auth/v1/users/me", json={"full_name": full_name}, headers=bearer(token)
    )

    assert response.status_code == 422
    assert response.json() == {"detail": "VALIDATION_ERROR", "errors": [CONTROL_ERROR]}
    async with sessions() as session:
        stored = await session.scalar(select(User.full_name).where(User.id == user["id"]))
    assert stored == "Ann Viewer"
