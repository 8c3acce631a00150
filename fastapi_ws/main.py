"""The fastapi_ws application: a personal WebSocket chat room per viewer, where picks arrive live."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from contracts.app import configure_logging, create_app
from contracts.resources import open_resources, standard_checks
from fastapi_ws.config import get_settings

PREFIX = "ws"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    configure_logging(settings.log_level)
    async with open_resources(app, settings, database=True):
        yield


app = create_app(
    title="fastapi_ws",
    prefix=PREFIX,
    description="A personal WebSocket chat room per viewer, where picks arrive live.",
    lifespan=lifespan,
    checks=standard_checks(database=True),
)
