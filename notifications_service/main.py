"""The notifications_service application: confirmation e-mails and recommendation digests."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from contracts.app import configure_logging, create_app
from contracts.resources import open_resources, standard_checks
from notifications_service.config import get_settings

PREFIX = "notifications"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    configure_logging(settings.log_level)
    async with open_resources(app, settings, database=True):
        yield


app = create_app(
    title="notifications_service",
    prefix=PREFIX,
    description="Confirmation e-mails and recommendation digests.",
    lifespan=lifespan,
    checks=standard_checks(database=True),
)
