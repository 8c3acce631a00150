"""Settings of fastapi_recom."""

from functools import lru_cache
from typing import ClassVar

from pydantic import SecretStr
from sqlalchemy.engine import make_url

from contracts.settings import ServiceSettings
from fastapi_recom.recommender import Strategy

# The cinema's content database the ETL reads (created by scripts/bootstrap.py for a local run).
CONTENT_DB = "content"


class Settings(ServiceSettings):
    db_name: ClassVar[str] = "recom"
    port: int = 8003

    # Overrides the content database on the POSTGRES_* server (`content` + POSTGRES_DB_SUFFIX).
    content_database_url: SecretStr | None = None
    # None: on, except in the test environment, where tests start the ETL themselves.
    etl_enabled: bool | None = None
    # Seconds between passes; a change shows in the catalogue within about this plus one second.
    etl_interval: float = 2.0
    etl_batch_size: int = 10_000
    # Upper bound of the retry delay while the content database is unreachable (seconds).
    etl_max_backoff: float = 60.0
    # /recom/ready reports the ETL as lagging when it is this many seconds behind.
    etl_lag_alert: float = 60.0

    @property
    def etl_runs(self) -> bool:
        return self.etl_enabled if self.etl_enabled is not None else self.environment != "test"

    @property
    def content_dsn(self) -> str:
        """libpq-style URL (asyncpg) of the content database."""
        if self.content_database_url is not None:
            return self.content_database_url.get_secret_value()
        url = make_url(self.database_url).set(
            drivername="postgresql", database=CONTENT_DB + self.postgres_db_suffix
        )
        return url.render_as_string(hide_password=False)

    @property
    def recom_dsn(self) -> str:
        """libpq-style URL (asyncpg) of recom's own database, for the ETL and the demo loader."""
        url = make_url(self.database_url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    # The ratings consumer: unacknowledged deliveries held at once, and how many (or how
    # many seconds' worth) go into one upsert. Several batches' worth of prefetch, so the
    # broker keeps delivering while a batch is written.
    ratings_prefetch: int = 4000
    ratings_batch_size: int = 1000
    ratings_batch_window: float = 0.05

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
