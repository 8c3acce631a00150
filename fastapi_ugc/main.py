"""The fastapi_ugc application: viewers rate films; every rating is published to RabbitMQ with confirms."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from contracts.app import configure_logging, create_app
from contracts.resources import open_resources, standard_checks
from fastapi_ugc.clock import RatingClock
from fastapi_ugc.config import get_settings
from fastapi_ugc.router import router
from fastapi_ugc.service import Intake

PREFIX = "ugc"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    configure_logging(settings.log_level)
    async with open_resources(app, settings, database=False, mirror_revocations=True):
        clock = RatingClock(app.state.redis, keep_seconds=settings.rating_clock_ttl)
        app.state.intake = Intake(app.state.redis, app.state.broker, settings, clock)
        yield


def build_app() -> FastAPI:
    """One replica of the service: `app` below, and in tests more, sharing Redis and RabbitMQ."""
    app = create_app(
        title="fastapi_ugc",
        prefix=PREFIX,
        description="Viewers rate films; every rating is published to RabbitMQ with confirms.",
        lifespan=lifespan,
        checks=standard_checks(database=False),
    )
    app.include_router(router)
    return app


app = build_app()
