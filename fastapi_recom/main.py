"""The fastapi_recom application: ratings store, film catalogue with its ETL, and user-user collaborative filtering."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from contracts.app import configure_logging, create_app
from contracts.resources import open_resources, standard_checks
from fastapi_recom import catalogue, etl
from fastapi_recom.config import get_settings
from fastapi_recom.consumers import RatingsConsumer, check_ratings_consumer

PREFIX = "recom"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    configure_logging(settings.log_level)
    ratings = RatingsConsumer(
        settings.rabbitmq_url.get_secret_value(),
        prefetch=settings.ratings_prefetch,
        batch_size=settings.ratings_batch_size,
        window=settings.ratings_batch_window,
    )
    app.state.ratings_consumer = ratings

    async def setup_broker() -> None:
        await ratings.start(app.state.broker, app.state.sessionmaker)

    async with (
        open_resources(app, settings, database=True, broker_setup=setup_broker),
        etl.run_in_background(app, settings),
    ):
        try:
            yield
        finally:
            await ratings.stop()


app = create_app(
    title="fastapi_recom",
    prefix=PREFIX,
    description="Ratings store, film catalogue with its ETL, and user-user collaborative filtering.",
    lifespan=lifespan,
    checks={
        **standard_checks(database=True),
        "ratings_consumer": check_ratings_consumer,
        "etl": etl.readiness,
    },
)
app.include_router(catalogue.router)
