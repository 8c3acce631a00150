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
DESCRIPTION = """A personal WebSocket chat room per viewer, where picks arrive live.

**Chat page:** `GET /ws/v1/chat/`. **Socket:** `WS /ws/v1/chat/connect`; allowed `Origin`s come
from `ALLOWED_ORIGINS` (others get HTTP 403).

Client frames: first `{"type": "auth", "token": "<access token>"}` (within 5 s; a superuser may add
`"room_user_id"` to open a viewer's room), optionally `{"type": "resume", "last_seq": N}` right
after it, then `{"type": "chat", "text": "..."}` and `{"type": "pong"}` (answer every ping).

Server frames: `{"type": "history", "messages": [...]}` once, then `{"type": "message", "seq",
"kind", "author", "created_at", "body", "items"}` per new message (`kind`: system,
recommendations, chat; `seq` rises by one per room), `{"type": "ping"}` every 15 s and
`{"type": "error", "detail"}` for a refused frame.

Close codes: 4400 bad first frame, 4401 missing/invalid/expired/revoked token, 4403 another
viewer's room, 4404 no such room (do not retry); 4408 too slow or silent, 1011/1013 server or
dependency trouble, 1012 restart (retry with backoff and resume).
"""


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
    description=DESCRIPTION,
    lifespan=lifespan,
    checks=standard_checks(database=True),
)
app.include_router(router)
app.mount("/ws/v1/chat/static", StaticFiles(directory=STATIC_DIR), name="chat-static")
