"""The fastapi_recom application: ratings store, film catalogue with its ETL, and user-user collaborative filtering."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from contracts.app import configure_logging, create_app
from contracts.resources import open_resources, standard_checks
from fastapi_recom import catalogue, etl
from fastapi_recom.config import get_settings

PREFIX = "recom"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    configure_logging(settings.log_level)
    async with open_resources(app, settings, database=True), etl.run_in_background(app, settings):
        yield


app = create_app(
    title="fastapi_recom",
    prefix=PREFIX,
    description="Ratings store, film catalogue with its ETL, and user-user collaborative filtering.",
    lifespan=lifespan,
    checks={**standard_checks(database=True), "etl": etl.readiness},
)
app.include_router(catalogue.router)
