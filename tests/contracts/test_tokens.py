"""The shared token check (`contracts.tokens`) refuses forged, expired and revoked tokens."""

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

from contracts.tokens import REVOKED_BEFORE_KEY, REVOKED_JTI_KEY
from fastapi_auth.config import Settings
from tests.auth.helpers import client_of, foreign_private_key, protected_app, whoami
from tests.support import bearer, free_port, make_token

INVALID = {"detail": "TOKEN_INVALID"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    payload = {
        "sub": str(uuid.uuid4()),
        "aud": "fastapi-users:auth",
        "iat": now.timestamp(),
        "exp": int((now + timedelta(minutes=15)).timestamp()),
        "jti": uuid.uuid4().hex,
        "email": "viewer@example.com",
        "is_superuser": False,
        "is_verified": True,
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def hs256_with_public_key(payload: dict[str, Any], public_pem: str) -> str:
    """The key-confusion attack: HMAC keyed with the public key, which everyone has."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    signature = hmac.new(public_pem.encode(), f"{header}.{body}".encode(), hashlib.sha256)
    return f"{header}.{body}.{b64(signature.digest())}"


def tampered(token: str, **changes: Any) -> str:
    header, body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    return f"{header}.{b64(json.dumps(payload).encode())}.{signature}"


@pytest.fixture
async def service(settings: Settings, redis: Redis) -> AsyncIterator[AsyncClient]:
    async with client_of(protected_app(settings.public_key_pem, redis)) as client:
        yield client


async def test_valid_token_is_accepted(service: AsyncClient) -> None:
    user_id = uuid.uuid4()
    token = make_token(user_id, superuser=True)

    status, body = await whoami(service, token)

    assert status == 200
    assert body["user_id"] == str(user_id)
    assert body["is_superuser"] is True
    assert body["jti"] == jwt.decode(token, options={"verify_signature": False})["jti"]


def forge(kind: str, public_pem: str, private_pem: str) -> str:
    def signed(algorithm: str = "RS256", **overrides: Any) -> str:
        return jwt.encode(claims(**overrides), private_pem, algorithm=algorithm)

    genuine = make_token()
    makers: dict[str, Callable[[], str]] = {
        "alg_none": lambda: jwt.encode(claims(), "", algorithm="none"),
        "signature_stripped": lambda: genuine.rsplit(".", 1)[0] + ".",
        "hs256_with_public_key": lambda: hs256_with_public_key(claims(), public_pem),
        "rs512_other_algorithm": lambda: signed("RS512"),
        "signed_by_another_key": lambda: make_token(key=foreign_private_key()),
        "wrong_audience": lambda: make_token(audience="some-other-service"),
        "tampered_superuser": lambda: tampered(genuine, is_superuser=True),
        "tampered_subject": lambda: tampered(genuine, sub=str(uuid.uuid4())),
        "missing_jti": lambda: signed(jti=None),
        "missing_sub": lambda: signed(sub=None),
        "missing_aud": lambda: signed(aud=None),
        "missing_exp": lambda: signed(exp=None),
        "missing_iat": lambda: signed(iat=None),
        "subject_not_uuid": lambda: signed(sub="42"),
        "not_a_jwt": lambda: "definitely-not-a-token",
        "truncated": lambda: genuine[:-10],
    }
    return makers[kind]()


@pytest.mark.parametrize(
    "kind",
    [
        "alg_none",
        "signature_stripped",
        "hs256_with_public_key",
        "rs512_other_algorithm",
        "signed_by_another_key",
        "wrong_audience",
        "tampered_superuser",
        "tampered_subject",
        "missing_jti",
        "missing_sub",
        "missing_aud",
        "missing_exp",
        "missing_iat",
        "subject_not_uuid",
        "not_a_jwt",
        "truncated",
    ],
)
async def test_forged_token_is_refused(service: AsyncClient, settings: Settings, kind: str) -> None:
    token = forge(kind, settings.public_key_pem, settings.private_key_pem)

    response = await service.get("/protected/whoami", headers=bearer(token))

    assert response.status_code == 401
    assert response.json() == INVALID
    assert response.headers["www-authenticate"] == "Bearer"


async def test_expired_token_is_refused(service: AsyncClient) -> None:
    token = make_token(issued_at=datetime.now(UTC) - timedelta(minutes=20))

    assert await whoami(service, token) == (401, {"detail": "TOKEN_EXPIRED"})


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}],
)
async def test_missing_bearer_token_is_refused(
    service: AsyncClient, headers: dict[str, str]
) -> None:
    response = await service.get("/protected/whoami", headers=headers)

    assert response.status_code == 401
    assert response.json() == {"detail": "NOT_AUTHENTICATED"}


async def test_token_revoked_by_jti_is_refused(service: AsyncClient, redis: Redis) -> None:
    token = make_token()
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    await redis.set(REVOKED_JTI_KEY.format(jti=jti), "1", ex=60)

    assert await whoami(service, token) == (401, {"detail": "TOKEN_REVOKED"})
    assert (await whoami(service, make_token()))[0] == 200


async def test_tokens_issued_before_cutoff_are_refused(service: AsyncClient, redis: Redis) -> None:
    user_id = uuid.uuid4()
    cutoff = datetime.now(UTC)
    before = make_token(user_id, issued_at=cutoff - timedelta(microseconds=1))
    after = make_token(user_id, issued_at=cutoff + timedelta(microseconds=1))
    await redis.set(REVOKED_BEFORE_KEY.format(user_id=user_id), repr(cutoff.timestamp()), ex=60)

    assert await whoami(service, before) == (401, {"detail": "TOKEN_REVOKED"})
    assert (await whoami(service, after))[0] == 200
    assert (await whoami(service, make_token(issued_at=cutoff - timedelta(seconds=1))))[0] == 200


async def test_revocation_store_down_answers_503(settings: Settings) -> None:
    # Built as contracts.resources builds it (from a URL), pointing at a closed port.
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=2)
    async with client_of(protected_app(settings.public_key_pem, unreachable)) as service:
        response = await service.get("/protected/whoami", headers=bearer(make_token()))
    await unreachable.aclose()

    assert response.status_code == 503
    assert response.json() == {"detail": "AUTH_BACKEND_UNAVAILABLE"}
    assert response.headers["retry-after"] == "2"


async def test_superuser_dependency_refuses_plain_user(service: AsyncClient) -> None:
    plain = await service.get("/protected/admin", headers=bearer(make_token(superuser=False)))
    admin = await service.get("/protected/admin", headers=bearer(make_token(superuser=True)))

    assert (plain.status_code, plain.json()) == (403, {"detail": "FORBIDDEN"})
    assert admin.status_code == 200
