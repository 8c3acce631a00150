"""Settings of fastapi_ugc."""

from functools import lru_cache

from contracts.settings import ServiceSettings


class Settings(ServiceSettings):
    port: int = 8002


@lru_cache
def get_settings() -> Settings:
    return Settings()
