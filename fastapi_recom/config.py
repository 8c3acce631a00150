"""Settings of fastapi_recom."""

from functools import lru_cache
from typing import ClassVar

from contracts.settings import ServiceSettings


class Settings(ServiceSettings):
    db_name: ClassVar[str] = "recom"
    port: int = 8003

    # The ratings consumer: unacknowledged deliveries held at once, and how many (or how
    # many seconds' worth) go into one upsert.
    ratings_prefetch: int = 1000
    ratings_batch_size: int = 500
    ratings_batch_window: float = 0.05


@lru_cache
def get_settings() -> Settings:
    return Settings()
