"""Settings every service reads (DESIGN.md's fixed names); each service subclasses ServiceSettings."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[1]

# A value still containing this marker came from .env.example unchanged.
PLACEHOLDER = "change-me"


class ServiceSettings(BaseSettings):
    """Environment variables override `.env`; nothing secret has a usable default."""

    model_config = SettingsConfigDict(
        env_file=ROOT / ".env", env_file_encoding="utf-8", extra="ignore"
    )

    # The database this service owns (DESIGN.md); tests append POSTGRES_DB_SUFFIX.
    db_name: ClassVar[str] = ""

    environment: Literal["development", "test", "production"] = "development"
    public_base_url: str = "http://localhost:8000"
    log_level: str = "INFO"

    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_user: str = "postgres"
    postgres_password: SecretStr = SecretStr("")
    postgres_db_suffix: str = ""
    postgres_pool_size: int = 10

    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_max_connections: int = 200

    jwt_public_key: SecretStr = SecretStr("")
    jwt_audience: str = "fastapi-users:auth"
    # The cinema's front-end origins: their pages may call the REST API (CORS) and open the
    # chat socket; comma-separated, each scheme://host[:port].
    allowed_origins: str = "http://localhost:8000,http://127.0.0.1:8000"

    @property
    def database_url(self) -> str:
        password = self.postgres_password.get_secret_value()
        auth = f"{self.postgres_user}:{password}" if password else self.postgres_user
        return (
            f"postgresql+asyncpg://{auth}@{self.postgres_host}:{self.postgres_port}"
            f"/{self.db_name}{self.postgres_db_suffix}"
        )

    @property
    def public_key_pem(self) -> str:
        # .env keeps PEM keys on one line with literal \n.
        return self.jwt_public_key.get_secret_value().replace("\\n", "\n")

    @property
    def origins(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> ServiceSettings:
        # STYLE.md: a placeholder secret is refused everywhere but on a developer's machine.
        if self.environment != "development":
            for name, value in self:
                if isinstance(value, SecretStr) and PLACEHOLDER in value.get_secret_value():
                    raise ValueError(
                        f"{name.upper()} still holds the placeholder from .env.example"
                    )
        return self
