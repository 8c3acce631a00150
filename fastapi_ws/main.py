"""The fastapi_ws application: a personal WebSocket chat room per viewer, where picks arrive live."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from contracts.app import configure_logging, create_app
from contracts.broker import make_broker
from contracts.resources import open_resources, standard_checks
from fastapi_ws.config import get_settings
from fastapi_ws.consumers import declare_ws_topology, register_consumers
from fastapi_ws.hub import Hub
from fastapi_ws.router import STATIC_DIR, router

PREFIX = "ws"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    configure_logging(settings.log_level)
    broker = make_broker(
        settings.rabbitmq_url.get_secret_value(), prefetch=settings.chat_consumer_prefetch
    )
    register_consumers(broker, app, settings)
    async with open_resources(
        app,
        settings,
        database=True,
        broker=broker,
        broker_setup=lambda: declare_ws_topology(broker),
    ):
        # Created before the first await, so a consumed event always finds the hub.
        hub = Hub(settings.redis_url, app.state.sessionmaker, app.state.token_verifier, settings)
        app.state.hub = hub
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()


app = create_app(
    title="fastapi_ws",
    prefix=PREFIX,
    description="A personal WebSocket chat room per viewer, where picks arrive live.",
    lifespan=lifespan,
    checks=standard_checks(database=True),
)
app.include_router(router)
app.mount("/ws/v1/chat/static", StaticFiles(directory=STATIC_DIR), name="chat-static")
