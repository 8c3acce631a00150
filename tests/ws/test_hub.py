"""The per-socket send queue: a client that stops reading is cut off once its queue is full."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, cast

from fastapi import WebSocket

from contracts.tokens import TokenClaims
from fastapi_ws.config import Settings
from fastapi_ws.hub import Connection, Hub


class StalledSocket:
    """A socket whose peer stopped reading: once the kernel's and uvicorn's buffers are full
    (megabytes on loopback, which is why this is not driven through a real socket),
    `send_text` waits for writability that never comes."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: tuple[int, str] | None = None
        self.stalled = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.sent.append(text)
        self.stalled.set()
        await asyncio.Event().wait()

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


def claims() -> TokenClaims:
    now = time.time()
    return TokenClaims(uuid.uuid4(), "jti", now, now + 600, None, False, True)


async def test_client_that_stops_reading_is_cut_off_when_queue_fills() -> None:
    settings = Settings(chat_send_queue=4, chat_heartbeat_interval=60)
    hub = Hub(settings.redis_url, cast(Any, None), cast(Any, None), settings)
    socket = StalledSocket()
    user = claims()
    conn = Connection(
        cast(WebSocket, socket), user, room_id=1, room_user_id=user.user_id, last_seq=0, hub=hub
    )
    conn.start()
    conn.offer((1, "frame 1"))
    await asyncio.wait_for(socket.stalled.wait(), 5)

    for seq in range(2, 6):  # fills the queue of 4 behind the stalled send
        conn.offer((seq, f"frame {seq}"))
    assert conn.close_code is None
    conn.offer((6, "frame 6"))

    assert conn.close_code == 4408
    await conn.stop()
    await asyncio.sleep(0.05)
    assert socket.closed_with == (4408, "TOO_SLOW")
    assert socket.sent == ["frame 1"]
    await hub.redis.aclose()
