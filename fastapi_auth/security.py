"""Passwords (OWASP ASVS policy, Argon2id) and access tokens (RS256 issue, shared check, JWKS)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from fastapi_users import exceptions
from fastapi_users.authentication import JWTStrategy
from fastapi_users.manager import BaseUserManager
from fastapi_users.password import PasswordHelper
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import SecretStr

from contracts.events import utcnow
from contracts.tokens import ALGORITHM, TokenClaims, TokenVerifier
from fastapi_auth.config import Settings
from fastapi_auth.models import User

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128

# The 8..128-character part of the 20,000 most common passwords (lower-cased, most frequent
# first) that Django ships as django/contrib/auth/common-passwords.txt.gz (from Royce
# Williams' list); shorter entries are refused by the length rule anyway.
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")


class PasswordReason(StrEnum):
    """The `reason` of REGISTER/RESET_PASSWORD/UPDATE_USER_INVALID_PASSWORD errors."""

    TOO_SHORT = "PASSWORD_TOO_SHORT"
    TOO_LONG = "PASSWORD_TOO_LONG"
    TOO_COMMON = "PASSWORD_TOO_COMMON"
    MATCHES_EMAIL = "PASSWORD_MATCHES_EMAIL"


def normalize_password(password: str) -> str:
    """NFKC, as NIST SP 800-63B asks, so that one password typed on two keyboards is one."""
    return unicodedata.normalize("NFKC", password)


@lru_cache
def common_passwords() -> frozenset[str]:
    return frozenset(COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines())


def password_problem(password: str, email: str | None = None) -> PasswordReason | None:
    """ASVS V2.1: length 8..128 counted in characters, no composition rules, no truncation."""
    normalized = normalize_password(password)
    if len(normalized) < MIN_PASSWORD_LENGTH:
        return PasswordReason.TOO_SHORT
    if len(normalized) > MAX_PASSWORD_LENGTH:
        return PasswordReason.TOO_LONG
    # The list is lower-cased: "Password123" is as common as "password123".
    lowered = normalized.lower()
    if lowered in common_passwords():
        return PasswordReason.TOO_COMMON
    if email and lowered in {email.lower(), email.partition("@")[0].lower()}:
        return PasswordReason.MATCHES_EMAIL
    return None


class PasswordHasher(PasswordHelper):
    """fastapi-users' helper with OWASP's Argon2id parameters and normalised input.

    Hashing costs tens of milliseconds of CPU, so the async variants run it in a thread and
    keep the event loop answering other requests meanwhile.
    """

    def __init__(self) -> None:
        # OWASP Password Storage Cheat Sheet: Argon2id, 19 MiB, 2 iterations, 1 lane.
        super().__init__(
            PasswordHash((Argon2Hasher(time_cost=2, memory_cost=19456, parallelism=1),))
        )

    def hash(self, password: str) -> str:
        return super().hash(normalize_password(password))

    def verify_and_update(
        self, plain_password: str, hashed_password: str
    ) -> tuple[bool, str | None]:
        return super().verify_and_update(normalize_password(plain_password), hashed_password)

    async def hash_async(self, password: str) -> str:
        return await asyncio.to_thread(self.hash, password)

    async def verify_and_update_async(
        self, plain_password: str, hashed_password: str
    ) -> tuple[bool, str | None]:
        return await asyncio.to_thread(self.verify_and_update, plain_password, hashed_password)


PASSWORD_HASHER = PasswordHasher()


def address_fingerprint(email: str, secret: str | SecretStr) -> str:
    """A keyed digest of the address exactly as stored: it binds a password-reset token to the
    address it was sent to without showing the address to whoever holds the token."""
    key = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    message = b"reset-address:" + email.encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SigningKeys:
    """The RS256 key pair, parsed once, with its key id and public JWK set."""

    private_key: RSAPrivateKey
    public_key: RSAPublicKey
    kid: str
    jwks: dict[str, Any]

    @classmethod
    def from_settings(cls, settings: Settings) -> SigningKeys:
        private_key = serialization.load_pem_private_key(settings.private_key_pem.encode(), None)
        if not isinstance(private_key, RSAPrivateKey):
            raise RuntimeError("JWT_PRIVATE_KEY is not an RSA key")
        public_key = private_key.public_key()
        jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(public_key, as_dict=True)
        kid = jwk_thumbprint(jwk)
        # RFC 7517 4.3: `use` and `key_ops` should not both be present.
        jwk.pop("key_ops", None)
        jwk.update({"kid": kid, "use": "sig", "alg": ALGORITHM})
        return cls(private_key, public_key, kid, {"keys": [jwk]})


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint: SHA-256 of the required members in lexical order, no spaces."""
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class AccessTokenStrategy(JWTStrategy[User, uuid.UUID]):
    """fastapi-users' JWT strategy, RS256, writing the claims every service reads.

    Reading goes through the shared `contracts.tokens.TokenVerifier`, so a token revoked
    by logout or a password reset is refused here exactly as in the other services.
    Logging out (`destroy_token`) hands the token's claims to `revoke`. A token's `iat` is
    `issued_at()`: the login's time from before it read the user row (see `UserManager`).
    """

    def __init__(
        self,
        keys: SigningKeys,
        verifier: TokenVerifier,
        settings: Settings,
        revoke: Callable[[TokenClaims], Awaitable[None]],
        issued_at: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(
            secret=settings.private_key_pem,
            lifetime_seconds=settings.access_token_lifetime_seconds,
            token_audience=[settings.jwt_audience],
            algorithm=ALGORITHM,
            public_key=settings.public_key_pem,
        )
        self.keys = keys
        self.verifier = verifier
        self.revoke = revoke
        self.issued_at = issued_at

    async def write_token(self, user: User) -> str:
        now = self.issued_at()
        payload = {
            "sub": str(user.id),
            "aud": self.token_audience[0],
            # Float seconds: a reset revokes every token issued before it, to the microsecond.
            "iat": now.timestamp(),
            "exp": now + timedelta(seconds=self.lifetime_seconds or 0),
            "jti": uuid.uuid4().hex,
            "email": user.email,
            "is_superuser": user.is_superuser,
            "is_verified": user.is_verified,
        }
        return jwt.encode(
            payload, self.keys.private_key, algorithm=self.algorithm, headers={"kid": self.keys.kid}
        )

    async def read_token(
        self, token: str | None, user_manager: BaseUserManager[User, uuid.UUID]
    ) -> User | None:
        if token is None:
            return None
        # Raises TokenInvalid/TokenExpired/TokenRevoked (401) or RevocationUnavailable (503).
        claims = await self.verifier.verify(token)
        try:
            return await user_manager.get(claims.user_id)
        except exceptions.UserNotExists:
            return None

    async def destroy_token(self, token: str, user: User) -> None:
        await self.revoke(self.verifier.decode(token))
