"""The notifications_service application: confirmation e-mails and recommendation digests."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial

from fastapi import FastAPI, Request

from contracts.app import configure_logging, create_app
from contracts.broker import declare_topology, make_broker, publish_event
from contracts.resources import open_resources, standard_checks
from notifications_service.config import get_settings
from notifications_service.consumers import EVENT_TYPES, QUEUE, register_consumers
from notifications_service.dispatcher import Dispatcher
from notifications_service.router import router
from notifications_service.scheduler import start_scheduler

PREFIX = "notifications"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    configure_logging(settings.log_level)
    broker = make_broker(settings.rabbitmq_url.get_secret_value(), prefetch=32)
    dispatcher: Dispatcher | None = None

    def wake_dispatcher() -> None:
        if dispatcher is not None:
            dispatcher.wake()

    register_consumers(broker, settings, lambda: app.state.sessionmaker, wake_dispatcher)
    async with open_resources(
        app,
        settings,
        database=True,
        broker=broker,
        broker_setup=partial(declare_topology, broker, QUEUE, EVENT_TYPES),
    ):
        dispatcher = Dispatcher(app.state.engine, app.state.sessionmaker, settings)
        tasks = [asyncio.create_task(dispatcher.run(), name="mail-dispatcher")]
        if settings.digest_scheduler_seconds > 0:
            tasks.append(
                start_scheduler(app.state.sessionmaker, partial(publish_event, broker), settings)
            )
        app.state.background = tasks
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(BaseException):
                    await task


async def background_running(request: Request) -> str | None:
    """Readiness: the mail sender and the digest scheduler still run (a task that ended sends
    or schedules nothing until a restart, which a failing /ready asks the orchestrator for)."""
    ended = [
        task.get_name() for task in getattr(request.app.state, "background", ()) if task.done()
    ]
    return f"unavailable: {', '.join(ended)} ended" if ended else None


app = create_app(
    title="notifications_service",
    prefix=PREFIX,
    description="Confirmation e-mails and recommendation digests.",
    lifespan=lifespan,
    checks={**standard_checks(database=True), "background": background_running},
)
app.include_router(router)
