"""Settings of fastapi_auth."""

from functools import lru_cache
from typing import ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pydantic import Field, SecretStr

from contracts.revocations import LONGEST_TOKEN_LIFETIME_SECONDS
from contracts.settings import ServiceSettings


class Settings(ServiceSettings):
    db_name: ClassVar[str] = "auth"
    port: int = 8001

    # RS256 private key (PEM on one line with literal \n); its public half is JWT_PUBLIC_KEY.
    jwt_private_key: SecretStr = SecretStr("")
    # Signs password-reset tokens (HS256).
    secret_key: SecretStr = SecretStr("")
    first_superuser_email: str = ""
    first_superuser_password: SecretStr = SecretStr("")

    # Short-lived: the revocation stream keeps its entries for the longest lifetime allowed.
    access_token_lifetime_seconds: int = Field(default=900, gt=0, le=LONGEST_TOKEN_LIFETIME_SECONDS)
    reset_token_lifetime_seconds: int = 3600
    confirm_code_ttl_seconds: int = 86400

    # Failed logins allowed per window before 429; the window restarts at the first failure.
    login_max_failures_per_account: int = 10
    login_max_failures_per_ip: int = 100
    login_failure_window_seconds: int = 900
    # An address its owner signed in from stays out of the account's count this long (30 days).
    login_known_address_seconds: int = 2_592_000

    # At most one confirmation or reset e-mail per account per this many seconds (anti-flood).
    mail_cooldown_seconds: int = 60

    # The outbox relay also polls, for rows written by another replica or left by a crash.
    outbox_poll_seconds: float = 1.0

    @property
    def private_key_pem(self) -> str:
        return self.jwt_private_key.get_secret_value().replace("\\n", "\n")

    def check_keys(self) -> None:
        """Refuse to start with missing secrets or a key pair whose halves do not match."""
        if not self.secret_key.get_secret_value():
            raise RuntimeError("SECRET_KEY is not set")
        if not self.private_key_pem or not self.public_key_pem:
            raise RuntimeError("JWT_PRIVATE_KEY and JWT_PUBLIC_KEY must both be set")
        private = serialization.load_pem_private_key(self.private_key_pem.encode(), None)
        if not isinstance(private, RSAPrivateKey):
            raise RuntimeError("JWT_PRIVATE_KEY is not an RSA key")
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        public = serialization.load_pem_public_key(self.public_key_pem.encode())
        if private.public_key().public_bytes(*spki) != public.public_bytes(*spki):
            raise RuntimeError("JWT_PUBLIC_KEY is not the public half of JWT_PRIVATE_KEY")


@lru_cache
def get_settings() -> Settings:
    return Settings()
