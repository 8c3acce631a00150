"""Access tokens: claims, logout, password reset and deactivation revoke them in auth and elsewhere."""

import uuid
from urllib.parse import parse_qs, urlsplit

import jwt
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fastapi_auth.config import Settings
from tests.auth.helpers import (
    PASSWORD,
    EventTap,
    create_superuser,
    foreign_private_key,
    login,
    new_email,
    register,
    whoami,
)
from tests.support import bearer, make_token

REVOKED = {"detail": "TOKEN_REVOKED"}
NEW_PASSWORD = "a-brand-new-passphrase-7"


async def test_login_token_carries_shared_claims(client: AsyncClient, settings: Settings) -> None:
    email = new_email()
    user = await register(client, email)

    token = await login(client, email)

    claims = jwt.decode(
        token, settings.public_key_pem, algorithms=["RS256"], audience="fastapi-users:auth"
    )
    assert set(claims) == {
        "sub",
        "aud",
        "exp",
        "iat",
        "jti",
        "email",
        "is_superuser",
        "is_verified",
    }
    assert claims["sub"] == user["id"]
    assert claims["aud"] == "fastapi-users:auth"
    assert claims["email"] == email
    assert claims["is_superuser"] is False
    assert claims["is_verified"] is False
    assert isinstance(claims["iat"], float)
    # exp is whole seconds (RFC 7519 NumericDate as PyJWT writes it), iat keeps microseconds.
    assert 899 < claims["exp"] - claims["iat"] <= 900
    assert len(claims["jti"]) == 32
    jwks = (await client.get("/auth/v1/.well-known/jwks.json")).json()
    assert jwt.get_unverified_header(token) == {
        "alg": "RS256",
        "typ": "JWT",
        "kid": jwks["keys"][0]["kid"],
    }


async def test_jwks_key_verifies_issued_tokens(client: AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    token = await login(client, email)

    response = await client.get("/auth/v1/.well-known/jwks.json")

    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert {key["kty"], key["alg"], key["use"]} == {"RSA", "RS256", "sig"}
    assert "d" not in key
    public = jwt.PyJWK(key).key
    assert jwt.decode(token, public, algorithms=["RS256"], audience="fastapi-users:auth")


async def test_login_bad_password_or_unknown_email_answers_same(client: AsyncClient) -> None:
    email = new_email()
    await register(client, email)

    wrong = await client.post(
        "/auth/v1/jwt/login", data={"username": email, "password": "not-the-password"}
    )
    unknown = await client.post(
        "/auth/v1/jwt/login", data={"username": new_email(), "password": PASSWORD}
    )
    # PostgreSQL cannot even compare a NUL character: no address holds one.
    garbled = await client.post(
        "/auth/v1/jwt/login", data={"username": email + "\x00", "password": PASSWORD}
    )

    assert (wrong.status_code, wrong.json()) == (400, {"detail": "LOGIN_BAD_CREDENTIALS"})
    assert (unknown.status_code, unknown.json()) == (400, {"detail": "LOGIN_BAD_CREDENTIALS"})
    assert (garbled.status_code, garbled.json()) == (400, {"detail": "LOGIN_BAD_CREDENTIALS"})


async def test_users_me_without_or_with_forged_token_answers_401(client: AsyncClient) -> None:
    anonymous = await client.get("/auth/v1/users/me")
    assert anonymous.status_code == 401

    foreign = make_token(key=foreign_private_key())
    forged = await client.get("/auth/v1/users/me", headers=bearer(foreign))
    assert forged.status_code == 401
    assert forged.json() == {"detail": "TOKEN_INVALID"}


async def test_logout_revokes_token_in_auth_and_shared_check(
    client: AsyncClient, protected: AsyncClient, events: EventTap
) -> None:
    email = new_email()
    user = await register(client, email)
    token = await login(client, email)
    other_session = await login(client, email)
    assert (await whoami(protected, token))[0] == 200

    response = await client.post("/auth/v1/jwt/logout", headers=bearer(token))

    assert response.status_code == 204
    me = await client.get("/auth/v1/users/me", headers=bearer(token))
    assert (me.status_code, me.json()) == (401, REVOKED)
    assert await whoami(protected, token) == (401, REVOKED)
    again = await client.post("/auth/v1/jwt/logout", headers=bearer(token))
    assert again.status_code == 401
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    revoked = await events.wait_for("auth.tokens.revoked", user_id=user["id"])
    assert (revoked["jti"], revoked["not_before"]) == (jti, None)
    # Only the presented token: the user's other session goes on.
    assert (await whoami(protected, other_session))[0] == 200


async def test_reset_password_revokes_earlier_tokens(
    client: AsyncClient, protected: AsyncClient, events: EventTap, settings: Settings
) -> None:
    email = new_email()
    user = await register(client, email)
    old_token = await login(client, email)

    asked = await client.post("/auth/v1/forgot-password", json={"email": email})
    assert asked.status_code == 202
    reset = await events.wait_for("auth.password.reset_requested", user_id=user["id"])
    assert reset["email"] == email
    url = urlsplit(reset["reset_url"])
    assert f"{url.scheme}://{url.netloc}" == settings.public_base_url
    assert url.path == "/auth/v1/reset"
    assert url.query == ""
    reset_token = parse_qs(url.fragment)["token"][0]
    page = await client.get(url.path)
    assert page.status_code == 200
    assert "Choose a new password" in page.text

    done = await client.post(
        "/auth/v1/reset-password", json={"token": reset_token, "password": NEW_PASSWORD}
    )

    assert done.status_code == 200
    me = await client.get("/auth/v1/users/me", headers=bearer(old_token))
    assert (me.status_code, me.json()) == (401, REVOKED)
    assert await whoami(protected, old_token) == (401, REVOKED)
    revoked = await events.wait_for("auth.tokens.revoked", user_id=user["id"])
    assert revoked["jti"] is None
    assert revoked["not_before"] is not None
    old_password = await client.post(
        "/auth/v1/jwt/login", data={"username": email, "password": PASSWORD}
    )
    assert old_password.status_code == 400
    new_token = await login(client, email, NEW_PASSWORD)
    assert (await whoami(protected, new_token))[0] == 200
    reused = await client.post(
        "/auth/v1/reset-password", json={"token": reset_token, "password": "yet-another-one-9"}
    )
    assert (reused.status_code, reused.json()) == (400, {"detail": "RESET_PASSWORD_BAD_TOKEN"})


async def test_reset_password_weak_password_is_refused(
    client: AsyncClient, events: EventTap
) -> None:
    email = new_email()
    user = await register(client, email)
    await client.post("/auth/v1/forgot-password", json={"email": email})
    reset = await events.wait_for("auth.password.reset_requested", user_id=user["id"])
    reset_token = parse_qs(urlsplit(reset["reset_url"]).fragment)["token"][0]

    response = await client.post(
        "/auth/v1/reset-password", json={"token": reset_token, "password": "short"}
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": {"code": "RESET_PASSWORD_INVALID_PASSWORD", "reason": "PASSWORD_TOO_SHORT"}
    }
    await login(client, email)


async def test_change_password_on_me_revokes_earlier_tokens(
    client: AsyncClient, protected: AsyncClient
) -> None:
    email = new_email()
    await register(client, email)
    token = await login(client, email)

    response = await client.patch(
        "/auth/v1/users/me",
        json={"password": NEW_PASSWORD, "full_name": "Renamed"},
        headers=bearer(token),
    )

    assert response.status_code == 200
    assert response.json()["full_name"] == "Renamed"
    assert await whoami(protected, token) == (401, REVOKED)
    assert (await whoami(protected, await login(client, email, NEW_PASSWORD)))[0] == 200


async def test_deactivation_by_superuser_revokes_tokens(
    client: AsyncClient,
    protected: AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    events: EventTap,
) -> None:
    admin = await create_superuser(client, sessions)
    email = new_email()
    user = await register(client, email)
    token = await login(client, email)

    response = await client.patch(
        f"/auth/v1/users/{user['id']}", json={"is_active": False}, headers=bearer(admin)
    )

    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert await whoami(protected, token) == (401, REVOKED)
    refused = await client.post(
        "/auth/v1/jwt/login", data={"username": email, "password": PASSWORD}
    )
    assert (refused.status_code, refused.json()) == (400, {"detail": "LOGIN_BAD_CREDENTIALS"})
    revoked = await events.wait_for("auth.tokens.revoked", user_id=user["id"])
    assert revoked["not_before"] is not None


async def test_user_admin_routes_require_superuser(
    client: AsyncClient, protected: AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    admin = await create_superuser(client, sessions)
    email = new_email()
    user = await register(client, email)
    token = await login(client, email)

    assert (
        await client.get(f"/auth/v1/users/{user['id']}", headers=bearer(token))
    ).status_code == 403
    got = await client.get(f"/auth/v1/users/{user['id']}", headers=bearer(admin))
    assert (got.status_code, got.json()["email"]) == (200, email)
    missing = await client.get(f"/auth/v1/users/{uuid.uuid4()}", headers=bearer(admin))
    assert missing.status_code == 404

    deleted = await client.delete(f"/auth/v1/users/{user['id']}", headers=bearer(admin))
    assert deleted.status_code == 204
    assert await whoami(protected, token) == (401, REVOKED)


async def test_login_response_is_not_cached(client: AsyncClient) -> None:
    email = new_email()
    await register(client, email)

    response = await client.post(
        "/auth/v1/jwt/login", data={"username": email, "password": PASSWORD}
    )

    assert response.status_code == 200
    assert response.json()["token_type"] == "bearer"
    assert response.headers["cache-control"] == "no-store"
