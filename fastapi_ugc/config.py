"""Settings of fastapi_ugc."""

from functools import lru_cache

from contracts.settings import ServiceSettings


class Settings(ServiceSettings):
    port: int = 8002

    # Viewers who have not confirmed their e-mail may rate only when this is on.
    ratings_allow_unverified: bool = False
    # Seconds a request waits for the broker's confirm before answering 503.
    publish_timeout: float = 3.0
    # Seconds an Idempotency-Key is remembered: a retry within it republishes the same event.
    idempotency_ttl: int = 24 * 3600


@lru_cache
def get_settings() -> Settings:
    return Settings()
