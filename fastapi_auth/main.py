"""The fastapi_auth application: sign-up, e-mail confirmation by short link, RS256 JWT login."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from contracts.app import configure_logging, create_app
from contracts.resources import open_resources, standard_checks
from fastapi_auth.config import get_settings

PREFIX = "auth"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    configure_logging(settings.log_level)
    async with open_resources(app, settings, database=True):
        yield


app = create_app(
    title="fastapi_auth",
    prefix=PREFIX,
    description="Sign-up, e-mail confirmation by short link, RS256 JWT login.",
    lifespan=lifespan,
    checks=standard_checks(database=True),
)
