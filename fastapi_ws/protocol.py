"""The chat socket's frames and close codes (DESIGN.md's protocol, written once for server and page).

Close codes in 4400-4499 mean "do not retry with the same credentials":
  4400 BAD_FRAME      the first frame was not a JSON `{"type": "auth", "token": ...}`
  4401 UNAUTHORIZED   no auth frame in time, or the token is invalid, expired or revoked (log in again)
  4403 FORBIDDEN      the room asked for belongs to someone else and the token is not a superuser's
  4404 ROOM_NOT_FOUND a superuser asked for a room that does not exist
Codes the client should retry with backoff (and resume from its last seq):
  4408 TOO_SLOW       the client stopped reading or stopped answering pings
  1011 / 1013         server error / a dependency (Redis, PostgreSQL) unavailable: try again later
  1012                the server is restarting
A foreign `Origin` is refused before the handshake completes (HTTP 403), so a page on another site
can never open a socket with the viewer's browser.
"""

from __future__ import annotations

import enum
from typing import Any

import orjson

from fastapi_ws.models import Message


class CloseCode(enum.IntEnum):
    BAD_FRAME = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    ROOM_NOT_FOUND = 4404
    TOO_SLOW = 4408
    SERVER_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


PING = orjson.dumps({"type": "ping"}).decode()
PONG = orjson.dumps({"type": "pong"}).decode()


def message_body(message: Message) -> dict[str, Any]:
    return {
        "seq": message.seq,
        "kind": message.kind,
        "author": message.author,
        "created_at": message.created_at.isoformat(),
        "body": message.body,
        "items": message.items,
    }


def message_frame(message: Message) -> str:
    return orjson.dumps({"type": "message", **message_body(message)}).decode()


def history_frame(messages: list[Message]) -> str:
    return orjson.dumps(
        {"type": "history", "messages": [message_body(m) for m in messages]}
    ).decode()


def error_frame(detail: str) -> str:
    return orjson.dumps({"type": "error", "detail": detail}).decode()
