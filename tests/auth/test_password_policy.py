"""Password policy (OWASP ASVS V2.1) on sign-up, profile update and reset; no truncation."""

import unicodedata

import pytest
from httpx import AsyncClient

from fastapi_auth.security import common_passwords, password_problem
from tests.auth.helpers import PASSWORD, login, new_email, register
from tests.support import bearer


def refused(reason: str, code: str = "REGISTER_INVALID_PASSWORD") -> dict[str, object]:
    return {"detail": {"code": code, "reason": reason}}


@pytest.mark.parametrize(
    ("password", "status", "body"),
    [
        ("q7#Lm2x", 400, refused("PASSWORD_TOO_SHORT")),
        ("q7#Lm2xZ", 201, None),
        ("q" * 127 + "Z", 201, None),
        ("q" * 128 + "Z", 400, refused("PASSWORD_TOO_LONG")),
        ("", 400, refused("PASSWORD_TOO_SHORT")),
        # Length counts characters, not bytes: these 7 emoji are 27 bytes of UTF-8.
        ("🎬🍿🎥🎦⭐🎭🎤", 400, refused("PASSWORD_TOO_SHORT")),
        ("🎬🍿🎥🎦⭐🎭🎤🎧", 201, None),
        ("ёлки-палки", 201, None),
        ("all lower case letters and spaces", 201, None),
        ("password123", 400, refused("PASSWORD_TOO_COMMON")),
        ("PassWord123", 400, refused("PASSWORD_TOO_COMMON")),
        ("iloveyou1", 400, refused("PASSWORD_TOO_COMMON")),
    ],
)
async def test_register_password_edges_answer_policy(
    client: AsyncClient, password: str, status: int, body: dict[str, object] | None
) -> None:
    email = new_email()
    response = await client.post("/auth/v1/register", json={"email": email, "password": password})
    assert response.status_code == status, response.text
    if body is not None:
        assert response.json() == body
    else:
        await login(client, email, password)


async def test_register_password_matching_email_is_refused(client: AsyncClient) -> None:
    email = new_email()
    for password in (email, email.split("@")[0].upper()):
        response = await client.post(
            "/auth/v1/register", json={"email": email, "password": password}
        )
        assert response.status_code == 400
        assert response.json() == refused("PASSWORD_MATCHES_EMAIL")


async def test_login_long_password_is_not_truncated(client: AsyncClient) -> None:
    email = new_email()
    password = "p" * 127 + "A"
    await register(client, email, password)

    near_miss = await client.post(
        "/auth/v1/jwt/login", data={"username": email, "password": "p" * 127 + "B"}
    )
    assert near_miss.status_code == 400
    assert near_miss.json() == {"detail": "LOGIN_BAD_CREDENTIALS"}
    prefix = await client.post("/auth/v1/jwt/login", data={"username": email, "password": "p" * 72})
    assert prefix.status_code == 400
    await login(client, email, password)


async def test_login_unicode_password_matches_any_normalization_form(client: AsyncClient) -> None:
    email = new_email()
    composed = unicodedata.normalize("NFC", "Crème brûlée à Zürich")
    await register(client, email, composed)

    await login(client, email, unicodedata.normalize("NFD", composed))
    await login(client, email, composed)


async def test_update_me_weak_password_is_refused(client: AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    token = await login(client, email)

    response = await client.patch(
        "/auth/v1/users/me", json={"password": "qwertyuiop"}, headers=bearer(token)
    )

    assert response.status_code == 400
    assert response.json() == refused("PASSWORD_TOO_COMMON", "UPDATE_USER_INVALID_PASSWORD")
    me = await client.get("/auth/v1/users/me", headers=bearer(token))
    assert me.status_code == 200


def test_common_password_list_is_shipped_and_in_policy_range() -> None:
    listed = common_passwords()
    assert len(listed) > 5000
    assert all(8 <= len(p) <= 128 and p == p.lower() for p in listed)
    assert password_problem(PASSWORD) is None
