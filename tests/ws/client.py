"""A chat-socket client for the tests: reads in the background, answers pings, queues frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TEST_ORIGIN = "http://chat.test"


def socket_url(base: str) -> str:
    return base.replace("http://", "ws://", 1) + "/ws/v1/chat/connect"


class ChatClient:
    """One tab: auth (and resume) on open, then every frame but pings lands in `frames`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls,
        base_url: str,
        token: str | None,
        *,
        last_seq: int | None = None,
        room_user_id: uuid.UUID | None = None,
        origin: str | None = TEST_ORIGIN,
    ) -> ChatClient:
        ws = await connect(socket_url(base_url), origin=origin, ping_interval=None)  # type: ignore[arg-type]
        auth: dict[str, Any] = {"type": "auth", "token": token}
        if room_user_id is not None:
            auth["room_user_id"] = str(room_user_id)
        await ws.send(json.dumps(auth))
        if last_seq is not None:
            await ws.send(json.dumps({"type": "resume", "last_seq": last_seq}))
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame.get("type") == "ping":
                    await self.ws.send(json.dumps({"type": "pong"}))
                    continue
                await self.frames.put(frame)
        except ConnectionClosed:
            pass
        if self.ws.protocol.close_rcvd is not None:
            self.close_code = self.ws.protocol.close_rcvd.code
            self.close_reason = self.ws.protocol.close_rcvd.reason

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await self.frames.get()

    async def history(self) -> list[dict[str, Any]]:
        frame = await self.next()
        assert frame["type"] == "history", frame
        return list(frame["messages"])

    async def message(self, timeout: float = 10.0) -> dict[str, Any]:
        frame = await self.next(timeout)
        assert frame["type"] == "message", frame
        return frame

    async def nothing_within(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            frame = await self.next(seconds)
            raise AssertionError(f"unexpected frame {frame}")

    async def send_chat(self, text: str) -> None:
        await self.ws.send(json.dumps({"type": "chat", "text": text}))

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Wait for the server to close; the close code it sent."""
        async with asyncio.timeout(timeout):
            await self._reader
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(Exception):
            await self._reader


async def refused_status(base_url: str, origin: str) -> int:
    """The HTTP status of a handshake the server refuses."""
    try:
        ws = await connect(socket_url(base_url), origin=origin)  # type: ignore[arg-type]
    except websockets.InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    raise AssertionError("handshake was accepted")


async def close_after(base_url: str, frames: list[dict[str, Any]]) -> tuple[int, str]:
    """Send `frames` on a raw socket that never answers a ping; the close code and reason received."""
    async with connect(socket_url(base_url), origin=TEST_ORIGIN, ping_interval=None) as ws:  # type: ignore[arg-type]
        for frame in frames:
            await ws.send(json.dumps(frame))
        async with asyncio.timeout(10):
            await ws.wait_closed()
    assert ws.protocol.close_rcvd is not None
    return ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason
