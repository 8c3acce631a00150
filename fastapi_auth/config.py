"""Settings of fastapi_auth."""

from functools import lru_cache
from typing import ClassVar

from contracts.settings import ServiceSettings


class Settings(ServiceSettings):
    db_name: ClassVar[str] = "auth"
    port: int = 8001


@lru_cache
def get_settings() -> Settings:
    return Settings()
