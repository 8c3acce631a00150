"""The fastapi_auth application: sign-up, e-mail confirmation by short link, RS256 JWT login."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI

from contracts.app import configure_logging, create_app
from contracts.broker import EVENTS_EXCHANGE
from contracts.resources import open_resources, standard_checks
from fastapi_auth.config import get_settings
from fastapi_auth.outbox import OutboxRelay
from fastapi_auth.router import router
from fastapi_auth.security import SigningKeys
from fastapi_auth.throttle import LoginThrottle
from fastapi_auth.users import AuthContext, ensure_first_superuser

PREFIX = "auth"
# The first superuser is created once the database answers; until then, retry this often.
SUPERUSER_RETRY_SECONDS = 2.0

logger = logging.getLogger(__name__)


async def create_first_superuser(context: AuthContext, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        try:
            await ensure_first_superuser(context)
            return
        except Exception as exc:
            logger.warning("first superuser not checked yet (%r); retrying", exc)
        with suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), SUPERUSER_RETRY_SECONDS)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    configure_logging(settings.log_level)
    settings.check_keys()

    async def declare_exchange() -> None:
        # Publishing needs the exchange; the consumers declare their own queues.
        await app.state.broker.declare_exchange(EVENTS_EXCHANGE)

    async with open_resources(app, settings, database=True, broker_setup=declare_exchange):
        relay = OutboxRelay(
            app.state.sessionmaker, app.state.broker, poll_seconds=settings.outbox_poll_seconds
        )
        context = AuthContext(
            settings=settings,
            redis=app.state.redis,
            sessionmaker=app.state.sessionmaker,
            keys=SigningKeys.from_settings(settings),
            verifier=app.state.token_verifier,
            throttle=LoginThrottle(
                app.state.redis,
                per_account=settings.login_max_failures_per_account,
                per_address=settings.login_max_failures_per_ip,
                window_seconds=settings.login_failure_window_seconds,
                known_seconds=settings.login_known_address_seconds,
            ),
            relay=relay,
        )
        app.state.auth = context
        stopping = asyncio.Event()
        tasks = [
            asyncio.create_task(relay.run(), name="outbox-relay"),
            asyncio.create_task(create_first_superuser(context, stopping), name="first-superuser"),
        ]
        try:
            yield
        finally:
            relay.stop()
            stopping.set()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task


app = create_app(
    title="fastapi_auth",
    prefix=PREFIX,
    description="Sign-up, e-mail confirmation by short link, RS256 JWT login.",
    lifespan=lifespan,
    checks=standard_checks(database=True),
)
app.include_router(router)
