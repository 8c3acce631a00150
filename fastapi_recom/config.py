"""Settings of fastapi_recom."""

from functools import lru_cache
from typing import ClassVar

from contracts.settings import ServiceSettings
from fastapi_recom.recommender import Strategy


class Settings(ServiceSettings):
    db_name: ClassVar[str] = "recom"
    port: int = 8003

    # The recommender's variant (bench/quality.py compares them on MovieLens-100K).
    recom_neighbours: int = 80
    recom_binary_similarity: bool = True
    recom_binary_votes: bool = True
    recom_min_ratings: int = 3
    recom_prior_votes: float = 20.0
    recom_popular_min_ratings: int = 5
    recom_max_profile: int = 100
    # The refresher polls `rating` this often (seconds) and re-reads this far back (seconds)
    # so that rows whose transaction committed late are still seen.
    recom_refresh_interval: float = 0.2
    recom_refresh_margin: float = 3.0
    # The overlay of recent changes is folded into the CSR base at this size or age (seconds).
    recom_merge_entries: int = 50_000
    recom_merge_interval: float = 600.0
    recom_titles_interval: float = 2.0
    # A request whose picks equal those published for that viewer this recently publishes
    # nothing (0 publishes on every request).
    recom_publish_repeat_seconds: float = 60.0
    # Verified tokens are trusted this long (seconds) before revocation is checked again.
    recom_token_cache_seconds: float = 0.5

    @property
    def strategy(self) -> Strategy:
        return Strategy(
            neighbours=self.recom_neighbours,
            binary_similarity=self.recom_binary_similarity,
            binary_votes=self.recom_binary_votes,
            min_ratings=self.recom_min_ratings,
            prior_votes=self.recom_prior_votes,
            popular_min_ratings=self.recom_popular_min_ratings,
            max_profile=self.recom_max_profile,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
