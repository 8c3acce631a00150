"""The fastapi_recom application: ratings store, film catalogue with its ETL, and user-user collaborative filtering."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from contracts.app import configure_logging, create_app
from contracts.broker import make_broker
from contracts.resources import open_resources, standard_checks
from fastapi_recom import catalogue, etl
from fastapi_recom.config import get_settings
from fastapi_recom.consumers import RatingsConsumer, check_ratings_consumer
from fastapi_recom.digests import declare_digest_topology, register_digest_consumer
from fastapi_recom.events import RepeatFilter
from fastapi_recom.refresher import MatrixStore
from fastapi_recom.router import router

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
    broker = make_broker(settings.rabbitmq_url.get_secret_value())
    register_digest_consumer(broker, app)

    async def broker_setup() -> None:
        await declare_digest_topology(broker)
        await ratings.start(broker, app.state.sessionmaker)

    async with (
        open_resources(
            app,
            settings,
            database=True,
            broker=broker,
            broker_setup=broker_setup,
            mirror_revocations=True,
        ),
        etl.run_in_background(app, settings),
    ):
        app.state.strategy = settings.strategy
        app.state.repeats = RepeatFilter(settings.recom_publish_repeat_seconds)
        store = MatrixStore(
            app.state.engine,
            interval=settings.recom_refresh_interval,
            margin=settings.recom_refresh_margin,
            titles_interval=settings.recom_titles_interval,
            merge_entries=settings.recom_merge_entries,
            merge_interval=settings.recom_merge_interval,
        )
        app.state.store = store
        await store.start()
        try:
            yield
        finally:
            await store.stop()
            await ratings.stop()


async def matrix_loaded(request: Request) -> str | None:
    store = getattr(request.app.state, "store", None)
    return None if store is not None and store.matrix is not None else "loading"


app = create_app(
    title="fastapi_recom",
    prefix=PREFIX,
    description="Ratings store, film catalogue with its ETL, and user-user collaborative filtering.",
    lifespan=lifespan,
    checks={
        **standard_checks(database=True),
        "ratings_consumer": check_ratings_consumer,
        "recommender": matrix_loaded,
        "etl": etl.readiness,
    },
)
app.include_router(router)
app.include_router(catalogue.router)
