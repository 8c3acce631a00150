"""Confirmation codes of the short links and token revocation, both kept in Redis."""

from __future__ import annotations

import json
import math
import secrets
import uuid
from dataclasses import dataclass

from fastapi_users import exceptions
from redis.asyncio import Redis

from contracts.events import TokensRevoked, utcnow
from contracts.revocations import record_revocation
from contracts.tokens import TokenClaims, expires_in

CONFIRM_CODE_KEY = "auth:confirm:{code}"
MAIL_COOLDOWN_KEY = "auth:mail:cooldown:{kind}:{user_id}"
# A spent code keeps its key (and TTL) with this value, to tell "used" from "unknown".
SPENT = "spent"
# 16 random bytes: 22 URL-safe characters, 128 bits, far beyond guessing.
CODE_BYTES = 16
MAX_CODE_LENGTH = 64


class ConfirmCodeUnknown(exceptions.InvalidVerifyToken):
    """Never issued, mistyped, or expired."""


class ConfirmCodeSpent(exceptions.InvalidVerifyToken):
    """Issued and already used."""


@dataclass(frozen=True)
class ConfirmCode:
    code: str
    user_id: uuid.UUID
    email: str


async def issue_confirm_code(redis: Redis, user_id: uuid.UUID, email: str, *, ttl: int) -> str:
    code = secrets.token_urlsafe(CODE_BYTES)
    owner = json.dumps({"user_id": str(user_id), "email": email})
    await redis.set(CONFIRM_CODE_KEY.format(code=code), owner, ex=ttl)
    return code


async def read_confirm_code(redis: Redis, code: str) -> ConfirmCode:
    if not code or len(code) > MAX_CODE_LENGTH:
        raise ConfirmCodeUnknown
    value = await redis.get(CONFIRM_CODE_KEY.format(code=code))
    if value is None:
        raise ConfirmCodeUnknown
    if value == SPENT.encode():
        raise ConfirmCodeSpent
    owner = json.loads(value)
    return ConfirmCode(code, uuid.UUID(owner["user_id"]), owner["email"])


async def spend_confirm_code(redis: Redis, code: str) -> None:
    await redis.set(CONFIRM_CODE_KEY.format(code=code), SPENT, xx=True, keepttl=True)


async def mail_allowed(redis: Redis, kind: str, user_id: uuid.UUID, *, cooldown: int) -> bool:
    """True at most once per `cooldown` seconds per user and kind of e-mail."""
    key = MAIL_COOLDOWN_KEY.format(kind=kind, user_id=user_id)
    return bool(await redis.set(key, "1", nx=True, ex=cooldown))


async def revoke_token(redis: Redis, claims: TokenClaims) -> TokensRevoked:
    """Revoke one token (logout) for the rest of its lifetime."""
    ttl = math.ceil(expires_in(claims))
    if ttl > 0:
        await record_revocation(redis, claims.user_id, jti=claims.jti, keep_seconds=ttl)
    return TokensRevoked(user_id=claims.user_id, jti=claims.jti)


async def revoke_all_tokens(
    redis: Redis, user_id: uuid.UUID, *, token_lifetime: int
) -> TokensRevoked:
    """Revoke every token of the user issued until now (password change, deactivation)."""
    now = utcnow()
    await record_revocation(redis, user_id, not_before=now.timestamp(), keep_seconds=token_lifetime)
    return TokensRevoked(user_id=user_id, not_before=now)
