"""Settings of fastapi_ws."""

from functools import lru_cache
from typing import ClassVar

from contracts.settings import ServiceSettings


class Settings(ServiceSettings):
    db_name: ClassVar[str] = "ws"
    port: int = 8004


@lru_cache
def get_settings() -> Settings:
    return Settings()
