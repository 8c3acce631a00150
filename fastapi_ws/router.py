"""Routes of fastapi_ws: the chat page, the chat socket, and the support team's room list."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from prometheus_client import Gauge
from sqlalchemy.exc import SQLAlchemyError

from contracts.errors import DEPENDENCY_ERRORS
from contracts.resources import SessionDep
from contracts.text import NO_NUL
from contracts.tokens import (
    AUTH_RESPONSES,
    CurrentUser,
    Forbidden,
    RevocationUnavailable,
    SuperUser,
    TokenClaims,
    TokenInvalid,
    TokenVerifier,
)
from fastapi_ws import service
from fastapi_ws.config import Settings, get_settings
from fastapi_ws.errors import RoomNotFound
from fastapi_ws.hub import Connection, Hub
from fastapi_ws.models import Room
from fastapi_ws.protocol import PONG, CloseCode, error_frame, history_frame, message_frame
from fastapi_ws.schemas import MessageRead, RoomRead

logger = logging.getLogger(__name__)

SOCKETS_OPEN = Gauge("ws_sockets_open", "Chat sockets open in this process")

STATIC_DIR = Path(__file__).parent / "static"
# The page loads only its own script and style and talks only to its own origin.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# An author may post this many chat messages per window (seconds) in a room, over all sockets.
CHAT_BURST = 20
CHAT_WINDOW = 10.0
# The highest sequence number a client may name, in a REST query or a socket frame
# (`message.seq` is int4: a larger value must be a bad request, not a database error).
MAX_SEQ = 1_000_000_000

# A page cursor of `GET /v1/rooms`; the digit counts keep both numbers in range (years < 5000).
ROOM_CURSOR = r"^[0-9]{1,17}\.[0-9]{1,18}$"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

UNAVAILABLE: tuple[type[Exception], ...] = (*DEPENDENCY_ERRORS, SQLAlchemyError)

router = APIRouter(prefix="/ws")


@router.get("/v1/chat/", include_in_schema=False)
async def chat_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "chat.html", media_type="text/html", headers=PAGE_HEADERS)


def room_cursor(room: Room) -> str:
    """Where the page after `room` starts: `<updated_at in µs since the epoch>.<room_id>`."""
    return f"{(room.updated_at - EPOCH) // timedelta(microseconds=1)}.{room.room_id}"


def parse_room_cursor(cursor: str) -> tuple[datetime, int]:
    micros, room_id = cursor.split(".")
    return EPOCH + timedelta(microseconds=int(micros)), int(room_id)


@router.get(
    "/v1/rooms",
    response_model=list[RoomRead],
    summary="Every viewer's room, most recently active first (support team only)",
    description=(
        "Rooms ordered by `updated_at` descending (then by room, newest first). A full page "
        "carries an `X-Next-Cursor` header; pass it back as `cursor` for the next page. Paging "
        "by cursor never repeats a room and never skips one; a room that receives a message "
        "meanwhile moves to the top, so it shows on the first page, not on a later one. "
        "`offset` is kept for old clients: while messages arrive it shows rooms twice."
    ),
    responses={
        200: {
            "headers": {
                "X-Next-Cursor": {
                    "description": "The `cursor` of the next page; absent on a short page",
                    "schema": {"type": "string"},
                }
            }
        },
        **AUTH_RESPONSES,
        403: {"description": "Not a superuser"},
    },
)
async def list_rooms(
    session: SessionDep,
    _: SuperUser,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[
        str | None,
        Query(
            pattern=ROOM_CURSOR,
            description="The previous page's `X-Next-Cursor`: the page after that one",
        ),
    ] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, deprecated=True)] = 0,
) -> list[Room]:
    before = parse_room_cursor(cursor) if cursor is not None else None
    rooms = list(await service.list_rooms(session, limit=limit, offset=offset, before=before))
    if len(rooms) == limit:
        response.headers["X-Next-Cursor"] = room_cursor(rooms[-1])
    return rooms


@router.get(
    "/v1/rooms/{user_id}/messages",
    response_model=list[MessageRead],
    summary="A room's messages: the newest `limit`, or everything after `after_seq`",
    responses={
        **AUTH_RESPONSES,
        403: {"description": "Another viewer's room"},
        404: {"description": "No room for this user"},
    },
)
async def read_room_messages(
    user_id: uuid.UUID,
    session: SessionDep,
    claims: CurrentUser,
    after_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[Any]:
    if not claims.may_act_for(user_id):
        raise Forbidden
    room = await service.get_room(session, user_id)
    if room is None:
        raise RoomNotFound
    return list(await service.history(session, room.room_id, after_seq=after_seq, limit=limit))


class Refused(Exception):
    """Ends a socket before it joins a room, with a close code the client reads."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def receive_frame(websocket: WebSocket, timeout: float | None) -> dict[str, Any] | None:
    """The next JSON object from the client; None if it is not one. Raises on disconnect."""
    async with asyncio.timeout(timeout):
        message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    raw = message.get("text") or message.get("bytes")
    try:
        frame = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    return frame if isinstance(frame, dict) else None


def seq_of(frame: dict[str, Any], name: str) -> int | None:
    value = frame.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise Refused(CloseCode.BAD_FRAME, f"BAD_{name.upper()}")
    return value


async def authenticate(
    websocket: WebSocket, settings: Settings, verifier: TokenVerifier
) -> tuple[TokenClaims, uuid.UUID, int | None]:
    """The first frame: `{"type": "auth", "token", "room_user_id"?, "last_seq"?}`."""
    try:
        frame = await receive_frame(websocket, settings.chat_auth_timeout)
    except TimeoutError as exc:
        raise Refused(CloseCode.UNAUTHORIZED, "AUTH_TIMEOUT") from exc
    if frame is None or frame.get("type") != "auth":
        raise Refused(CloseCode.BAD_FRAME, "AUTH_EXPECTED")
    token = frame.get("token")
    if not isinstance(token, str) or not token:
        raise Refused(CloseCode.UNAUTHORIZED, "NOT_AUTHENTICATED")
    try:
        claims = await verifier.verify(token)
    except RevocationUnavailable as exc:
        raise Refused(CloseCode.TRY_AGAIN_LATER, exc.code) from exc
    except TokenInvalid as exc:
        raise Refused(CloseCode.UNAUTHORIZED, exc.code) from exc
    room_user_id = claims.user_id
    if frame.get("room_user_id") is not None:
        try:
            room_user_id = uuid.UUID(str(frame["room_user_id"]))
        except ValueError as exc:
            raise Refused(CloseCode.BAD_FRAME, "BAD_ROOM_USER_ID") from exc
        if not claims.may_act_for(room_user_id):
            raise Refused(CloseCode.FORBIDDEN, "FORBIDDEN")
    return claims, room_user_id, seq_of(frame, "last_seq")


async def open_room(hub: Hub, claims: TokenClaims, room_user_id: uuid.UUID) -> Room:
    """The room to join; a viewer's own room is created (with its welcome) on first visit."""
    async with hub.sessionmaker() as session:
        room = await service.get_room(session, room_user_id)
    if room is not None:
        return room
    if room_user_id != claims.user_id:
        raise Refused(CloseCode.ROOM_NOT_FOUND, "ROOM_NOT_FOUND")
    async with hub.sessionmaker() as session, session.begin():
        room, created = await service.lock_room(session, room_user_id, email=claims.email)
    for message in created:
        await hub.push(room_user_id, message.seq, message_frame(message))
    return room


async def post_chat(conn: Connection, text: object, settings: Settings) -> bool:
    """Store and push a chat message; False if it was refused (with an error frame)."""
    if (
        not isinstance(text, str)
        or not text.strip()
        or len(text) > settings.chat_max_text
        or NO_NUL.found_in(text)
    ):
        conn.offer((None, error_frame("INVALID_TEXT")))
        return False
    hub = conn.hub
    author = "viewer" if conn.claims.user_id == conn.room_user_id else "support"
    async with hub.sessionmaker() as session, session.begin():
        room = await session.get(Room, conn.room_id, with_for_update=True)
        assert room is not None
        # Checked under the room's lock: the author's sockets, in any process, take turns here.
        limited = await service.chat_rate_exceeded(
            session, room.room_id, author=author, burst=CHAT_BURST, window=CHAT_WINDOW
        )
        if not limited:
            message = await service.append_message(
                session, room, kind="chat", author=author, body=text.strip()
            )
    if limited:
        conn.offer((None, error_frame("RATE_LIMITED")))
        return False
    await hub.push(conn.room_user_id, message.seq, message_frame(message))
    return True


class FrameHandler:
    """The client's frames after auth: chat (rate-limited), ping, pong."""

    def __init__(self, conn: Connection, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        # This socket's chat attempts, refused ones included: a socket over the limit is
        # refused without a transaction or the room's lock, so it costs the database at most
        # CHAT_BURST round trips per window; the check in `post_chat` binds across sockets.
        self.sent: list[float] = []

    async def handle(self, frame: dict[str, Any] | None) -> None:
        conn = self.conn
        conn.last_seen = time.monotonic()
        kind = frame.get("type") if frame is not None else None
        if kind == "chat":
            assert frame is not None
            now = time.monotonic()
            self.sent = [t for t in self.sent if now - t < CHAT_WINDOW]
            if len(self.sent) >= CHAT_BURST:
                conn.offer((None, error_frame("RATE_LIMITED")))
                return
            self.sent.append(now)
            await post_chat(conn, frame.get("text"), self.settings)
        elif kind == "ping":
            conn.offer((None, PONG))
        elif kind not in ("pong", "resume"):
            conn.offer((None, error_frame("BAD_FRAME" if frame is None else "UNKNOWN_TYPE")))


@router.websocket("/v1/chat/connect", name="chat_connect")
async def chat_connect(websocket: WebSocket) -> None:
    settings = get_settings()
    hub: Hub = websocket.app.state.hub
    origin = websocket.headers.get("origin")
    # Browsers always send Origin; a page of another site must not ride the viewer's session.
    if origin is not None and origin not in settings.origins:
        logger.info("chat socket refused for origin %s", origin)
        await websocket.close(code=CloseCode.FORBIDDEN)
        return
    await websocket.accept()
    SOCKETS_OPEN.inc()
    conn: Connection | None = None
    try:
        claims, room_user_id, last_seq = await authenticate(
            websocket, settings, websocket.app.state.token_verifier
        )
        # Frames that came before the history was sent, handled right after it.
        backlog: list[dict[str, Any] | None] = []
        if last_seq is None:
            # A reconnecting client sends `resume` right behind `auth`.
            with contextlib.suppress(TimeoutError):
                frame = await receive_frame(websocket, settings.chat_resume_grace)
                if frame is not None and frame.get("type") == "resume":
                    last_seq = seq_of(frame, "last_seq")
                else:
                    backlog.append(frame)
        room = await open_room(hub, claims, room_user_id)
        conn = Connection(
            websocket, claims, room_id=room.room_id, room_user_id=room_user_id, last_seq=0, hub=hub
        )
        # Join before reading the history: a push racing the read is queued, not lost.
        hub.join(conn)
        async with hub.sessionmaker() as session:
            messages = await service.history(
                session, room.room_id, after_seq=last_seq, limit=settings.chat_history_limit
            )
            if messages:
                conn.last_seq = messages[-1].seq
            else:
                latest = await service.get_room(session, room_user_id)
                conn.last_seq = min(last_seq or 0, latest.last_seq if latest else 0)
        await websocket.send_text(history_frame(list(messages)))
        conn.start()
        handler = FrameHandler(conn, settings)
        for frame in backlog:
            await handler.handle(frame)
        while True:
            await handler.handle(await receive_frame(websocket, None))
    except Refused as refused:
        logger.info("chat socket refused: %s", refused.reason)
        await websocket.close(code=refused.code, reason=refused.reason)
    except WebSocketDisconnect:
        pass
    except UNAVAILABLE as exc:
        logger.warning("chat socket closed, dependency unavailable: %r", exc)
        if conn is not None:
            conn.close(CloseCode.TRY_AGAIN_LATER, "SERVICE_UNAVAILABLE")
        else:
            await _close_quietly(websocket, CloseCode.TRY_AGAIN_LATER, "SERVICE_UNAVAILABLE")
    except RuntimeError:
        # Starlette's answer to receiving on a socket the server already closed.
        pass
    finally:
        SOCKETS_OPEN.dec()
        if conn is not None:
            hub.leave(conn)
            await conn.stop()


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError):
        await websocket.close(code=code, reason=reason)
