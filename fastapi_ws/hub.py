"""Live sockets of this process and the Redis pub/sub fan-out that reaches every process's sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

import orjson
from fastapi import WebSocket
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.tokens import RevocationUnavailable, TokenClaims, TokenVerifier
from fastapi_ws import service
from fastapi_ws.config import Settings
from fastapi_ws.protocol import PING, CloseCode, message_frame

logger = logging.getLogger(__name__)

# One channel for every room: each process filters for the rooms it holds sockets of.
CHANNEL = "ws:fanout"
# Seconds a Redis command may wait for its answer: a stalled server fails a push, not hangs it.
COMMAND_TIMEOUT = 2.0
# The idle subscription pings this often (seconds); a ping unanswered by the next is a dead peer.
FANOUT_PING_INTERVAL = 10.0

# Queue markers besides (seq, text) frames.
_SYNC = "sync"
_STOP = "stop"

QueueItem = tuple[int | None, str]


class Connection:
    """One authenticated socket: a bounded send queue drained by one sender task, in seq order."""

    def __init__(
        self,
        websocket: WebSocket,
        claims: TokenClaims,
        *,
        room_id: int,
        room_user_id: uuid.UUID,
        last_seq: int,
        hub: Hub,
    ) -> None:
        self.websocket = websocket
        self.claims = claims
        self.room_id = room_id
        self.room_user_id = room_user_id
        self.last_seq = last_seq
        self.hub = hub
        self.last_seen = time.monotonic()
        self.close_code: int | None = None
        self._queue: asyncio.Queue[QueueItem | str] = asyncio.Queue(hub.settings.chat_send_queue)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="ws-send"),
            asyncio.create_task(self._watch(), name="ws-watch"),
        ]

    def offer(self, item: QueueItem | str) -> None:
        """Queue a frame without waiting; a client too slow to take it is cut off."""
        if self.close_code is not None:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            logger.info("cutting off slow client of user %s", self.claims.user_id)
            self.close(CloseCode.TOO_SLOW, "TOO_SLOW")

    def close(self, code: int, reason: str) -> None:
        if self.close_code is not None:
            return
        self.close_code = code
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.hub.spawn(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.websocket.close(code=code, reason=reason)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send_loop(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if item == _STOP:
                    return
                if item == _SYNC:
                    await self._catch_up(None)
                    continue
                assert isinstance(item, tuple)
                seq, text = item
                if seq is None:
                    await self.websocket.send_text(text)
                    continue
                if seq <= self.last_seq:
                    continue  # already sent in the history or by a catch-up
                if seq > self.last_seq + 1:
                    # Pushes from several processes may overtake each other; the database
                    # holds every earlier message (stored before pushed).
                    await self._catch_up(seq)
                await self.websocket.send_text(text)
                self.last_seq = seq
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.info("send to user %s failed: %r", self.claims.user_id, exc)
            self.close(CloseCode.TRY_AGAIN_LATER, "SEND_FAILED")

    async def _catch_up(self, before_seq: int | None) -> None:
        async with self.hub.sessionmaker() as session:
            missed = await service.messages_between(
                session, self.room_id, after_seq=self.last_seq, before_seq=before_seq
            )
        for message in missed:
            await self.websocket.send_text(message_frame(message))
            self.last_seq = message.seq

    async def _watch(self) -> None:
        """Heartbeat, dead-peer detection, token expiry and periodic revocation checks."""
        settings = self.hub.settings
        last_check = time.monotonic()
        while True:
            await asyncio.sleep(settings.chat_heartbeat_interval)
            now = time.monotonic()
            if now - self.last_seen > settings.chat_heartbeat_timeout:
                self.close(CloseCode.TOO_SLOW, "HEARTBEAT_TIMEOUT")
                return
            if time.time() >= self.claims.expires_at:
                self.close(CloseCode.UNAUTHORIZED, "TOKEN_EXPIRED")
                return
            if now - last_check >= settings.chat_revocation_check_interval:
                last_check = now
                try:
                    revoked = await self.hub.verifier.is_revoked(self.claims)
                except RevocationUnavailable:
                    self.close(CloseCode.TRY_AGAIN_LATER, "AUTH_BACKEND_UNAVAILABLE")
                    return
                if revoked:
                    self.close(CloseCode.UNAUTHORIZED, "TOKEN_REVOKED")
                    return
            self.offer((None, PING))


class Hub:
    """This process's sockets by room; pushes go through Redis so any process's sockets get them."""

    def __init__(
        self,
        redis_url: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        verifier: TokenVerifier,
        settings: Settings,
        *,
        ping_interval: float = FANOUT_PING_INTERVAL,
    ) -> None:
        # One client for pushes and the subscription: a command gives up after COMMAND_TIMEOUT,
        # while the subscription's idle reads pass a timeout of their own (`get_message`), which
        # redis-py applies instead of the socket's.
        self.redis = Redis.from_url(
            redis_url,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=COMMAND_TIMEOUT,
            socket_keepalive=True,
        )
        self.ping_interval = ping_interval
        self.sessionmaker = sessionmaker
        self.verifier = verifier
        self.settings = settings
        self.rooms: dict[uuid.UUID, set[Connection]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.subscribed = asyncio.Event()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="ws-hub")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
        for conn in self.connections():
            conn.close(CloseCode.SERVICE_RESTART, "SERVICE_RESTART")
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.redis.aclose()

    def connections(self) -> list[Connection]:
        return [conn for room in self.rooms.values() for conn in room]

    def join(self, conn: Connection) -> None:
        self.rooms.setdefault(conn.room_user_id, set()).add(conn)

    def leave(self, conn: Connection) -> None:
        room = self.rooms.get(conn.room_user_id)
        if room is not None:
            room.discard(conn)
            if not room:
                del self.rooms[conn.room_user_id]

    async def push(self, room_user_id: uuid.UUID, seq: int, frame: str) -> None:
        await self.redis.publish(
            CHANNEL,
            orjson.dumps({"op": "message", "room": str(room_user_id), "seq": seq, "frame": frame}),
        )

    async def revoke(
        self, user_id: uuid.UUID, *, jti: str | None, not_before: float | None
    ) -> None:
        await self.redis.publish(
            CHANNEL,
            orjson.dumps(
                {"op": "revoke", "user": str(user_id), "jti": jti, "not_before": not_before}
            ),
        )

    async def _listen(self) -> None:
        first = True
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    if not first:
                        # Pushes sent while we were deaf are in the database: fetch them.
                        for conn in self.connections():
                            conn.offer(_SYNC)
                    first = False
                    self.subscribed.set()
                    awaiting_pong = False
                    while True:
                        message = await pubsub.get_message(timeout=self.ping_interval)
                        if message is not None:
                            awaiting_pong = False
                            if message["type"] == "message":
                                self._dispatch(message["data"])
                        elif awaiting_pong:
                            # A stalled server or a dead link: the socket alone would never say.
                            raise RedisConnectionError("fan-out subscription: ping unanswered")
                        else:
                            # Its answer, a "pong" message, proves the connection alive.
                            await pubsub.ping()
                            awaiting_pong = True
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                logger.warning("fan-out subscription lost, retrying in 1 s: %r", exc)
                await asyncio.sleep(1)

    def _dispatch(self, data: bytes) -> None:
        try:
            payload = orjson.loads(data)
            op = payload["op"]
            if op == "message":
                for conn in self.rooms.get(uuid.UUID(payload["room"]), ()):
                    conn.offer((payload["seq"], payload["frame"]))
            elif op == "revoke":
                self._close_revoked(
                    uuid.UUID(payload["user"]), payload.get("jti"), payload.get("not_before")
                )
        except (KeyError, ValueError, TypeError) as exc:
            logger.error("malformed fan-out message %r: %r", data[:200], exc)

    def _close_revoked(self, user_id: uuid.UUID, jti: str | None, not_before: float | None) -> None:
        for conn in self.connections():
            claims = conn.claims
            if claims.user_id != user_id:
                continue
            if jti is None and not_before is None:
                hit = True  # no detail: every token of the user
            else:
                hit = claims.jti == jti or (
                    not_before is not None and claims.issued_at < not_before
                )
            if hit:
                conn.close(CloseCode.UNAUTHORIZED, "TOKEN_REVOKED")
