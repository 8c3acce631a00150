"""Settings of fastapi_recom."""

from functools import lru_cache
from typing import ClassVar

from contracts.settings import ServiceSettings


class Settings(ServiceSettings):
    db_name: ClassVar[str] = "recom"
    port: int = 8003


@lru_cache
def get_settings() -> Settings:
    return Settings()
