"""Access-token verification shared by every service: RS256 signature, audience, expiry, revocation."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from fastapi import Depends
from fastapi.security import HTTPBearer
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection

from contracts.errors import ServiceError

if TYPE_CHECKING:
    from contracts.revocations import RevocationMirror

ALGORITHM = "RS256"

# Redis keys written by fastapi_auth and read here: one revoked token by jti, and a
# per-user cut-off (epoch seconds) before which every token is revoked.
REVOKED_JTI_KEY = "auth:revoked:jti:{jti}"
REVOKED_BEFORE_KEY = "auth:revoked:before:{user_id}"
# Written by fastapi_auth when a viewer confirms the address, kept for a token's lifetime: a
# token issued before the confirmation still says `is_verified: false` until it expires.
CONFIRMED_KEY = "auth:confirmed:{user_id}"


class TokenInvalid(ServiceError):
    status_code = 401
    code = "TOKEN_INVALID"
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012


class TokenExpired(TokenInvalid):
    code = "TOKEN_EXPIRED"


class TokenRevoked(TokenInvalid):
    code = "TOKEN_REVOKED"


class NotAuthenticated(TokenInvalid):
    code = "NOT_AUTHENTICATED"


class RevocationUnavailable(ServiceError):
    status_code = 503
    code = "AUTH_BACKEND_UNAVAILABLE"
    headers = {"Retry-After": "2"}  # noqa: RUF012


class Forbidden(ServiceError):
    status_code = 403
    code = "FORBIDDEN"


class NotVerified(ServiceError):
    status_code = 403
    code = "USER_NOT_VERIFIED"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: uuid.UUID
    jti: str
    issued_at: float
    expires_at: float
    email: str | None
    is_superuser: bool
    is_verified: bool

    def may_act_for(self, user_id: uuid.UUID) -> bool:
        return self.is_superuser or self.user_id == user_id


class TokenVerifier:
    """Verifies locally with the public key, then checks revocation.

    Revocation is read from a `RevocationMirror` while it is live (a dict look-up), otherwise
    from Redis (one round trip reads both revocation keys). A token's signature and claims
    cannot change, so a verified token is remembered (at most `cache_size` of them) and its
    next requests skip the RSA check; expiry and revocation are checked on every request.
    """

    def __init__(
        self,
        public_key_pem: str,
        audience: str,
        redis: Redis,
        *,
        revocations: RevocationMirror | None = None,
        cache_size: int = 4096,
    ) -> None:
        # Parsing the PEM once keeps the hot path to a signature check.
        key = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).prepare_key(
            public_key_pem
        )
        self._key = key.public_key() if isinstance(key, RSAPrivateKey) else key
        self._audience = audience
        self._redis = redis
        self._revocations = revocations
        self._cache_size = cache_size
        self._verified: dict[str, TokenClaims] = {}

    def decode(self, token: str) -> TokenClaims:
        """Signature, algorithm, audience, expiry and required claims; no revocation check."""
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                options={"require": ["sub", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired from exc
        except jwt.InvalidTokenError as exc:
            raise TokenInvalid from exc
        try:
            user_id = uuid.UUID(str(payload["sub"]))
        except ValueError as exc:
            raise TokenInvalid from exc
        return TokenClaims(
            user_id=user_id,
            jti=str(payload["jti"]),
            issued_at=float(payload["iat"]),
            expires_at=float(payload["exp"]),
            email=payload.get("email"),
            is_superuser=bool(payload.get("is_superuser", False)),
            is_verified=bool(payload.get("is_verified", False)),
        )

    async def is_revoked(self, claims: TokenClaims) -> bool:
        if self._revocations is not None and self._revocations.live:
            return self._revocations.is_revoked(claims)
        try:
            jti_hit, not_before = await self._redis.mget(
                REVOKED_JTI_KEY.format(jti=claims.jti),
                REVOKED_BEFORE_KEY.format(user_id=claims.user_id),
            )
        except (RedisError, OSError) as exc:
            raise RevocationUnavailable from exc
        return jti_hit is not None or (
            not_before is not None and claims.issued_at < float(not_before)
        )

    async def verify(self, token: str) -> TokenClaims:
        claims = self._verified.get(token)
        if claims is None:
            claims = self.decode(token)
            if len(self._verified) >= self._cache_size:
                # Cheaper than an LRU and enough: a flood of distinct tokens costs RSA checks.
                self._verified.clear()
            self._verified[token] = claims
        elif claims.expires_at <= time.time():
            del self._verified[token]
            raise TokenExpired
        if await self.is_revoked(claims):
            raise TokenRevoked
        return claims


async def record_confirmation(
    redis: Redis, user_id: uuid.UUID, *, confirmed: bool, keep_seconds: int
) -> None:
    """fastapi_auth's side of `CONFIRMED_KEY`: set on confirmation, dropped when an e-mail
    change makes the viewer unconfirmed again."""
    key = CONFIRMED_KEY.format(user_id=user_id)
    if confirmed:
        await redis.set(key, "1", ex=keep_seconds)
    else:
        await redis.delete(key)


async def confirmed_since_issued(redis: Redis, claims: TokenClaims) -> bool:
    """Whether the viewer of a token that says unverified has confirmed the address since it
    was issued: they need not sign in again to do what verified viewers may."""
    try:
        return bool(await redis.exists(CONFIRMED_KEY.format(user_id=claims.user_id)))
    except (RedisError, OSError) as exc:
        raise RevocationUnavailable from exc


def expires_in(claims: TokenClaims) -> float:
    return max(0.0, claims.expires_at - datetime.now(UTC).timestamp())


class BearerClaims(HTTPBearer):
    """The bearer scheme of the OpenAPI spec and the token check as one dependency: FastAPI
    resolves each nested dependency on every request, which the hot paths feel."""

    async def __call__(self, request: HTTPConnection) -> TokenClaims:  # type: ignore[override]
        credentials = await super().__call__(request)
        if credentials is None:
            raise NotAuthenticated
        verifier: TokenVerifier = request.app.state.token_verifier
        return await verifier.verify(credentials.credentials)


current_claims = BearerClaims(
    scheme_name="HTTPBearer",
    auto_error=False,
    description="Access token from /auth/v1/jwt/login",
)


async def current_superuser(
    claims: Annotated[TokenClaims, Depends(current_claims)],
) -> TokenClaims:
    if not claims.is_superuser:
        raise Forbidden
    return claims


CurrentUser = Annotated[TokenClaims, Depends(current_claims)]
SuperUser = Annotated[TokenClaims, Depends(current_superuser)]

# Listed in `responses=` of every route that takes a token.
AUTH_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"description": "Missing, invalid, expired or revoked token"},
    503: {"description": "Revocation store unreachable"},
}
