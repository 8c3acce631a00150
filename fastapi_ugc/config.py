"""Settings of fastapi_ugc."""

from functools import lru_cache

from pydantic import PositiveInt

from contracts.settings import ServiceSettings


class Settings(ServiceSettings):
    port: int = 8002

    # Viewers who have not confirmed their e-mail may rate only when this is on.
    ratings_allow_unverified: bool = False
    # Seconds a request waits for the broker's confirm before answering 503.
    publish_timeout: float = 3.0
    # Seconds an Idempotency-Key is remembered: a retry within it republishes the same event.
    idempotency_ttl: int = 24 * 3600
    # Seconds past its last change that a (viewer, film)'s stamp is kept in Redis. Order does
    # not depend on it (see `clock`): it only bounds the keys to the pairs changed lately.
    rating_clock_ttl: PositiveInt = 300


@lru_cache
def get_settings() -> Settings:
    return Settings()
