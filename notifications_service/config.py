"""Settings of notifications_service."""

from functools import lru_cache
from typing import ClassVar

from contracts.settings import ServiceSettings


class Settings(ServiceSettings):
    db_name: ClassVar[str] = "notifications"
    port: int = 8005


@lru_cache
def get_settings() -> Settings:
    return Settings()
