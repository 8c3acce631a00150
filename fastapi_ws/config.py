"""Settings of fastapi_ws."""

from functools import lru_cache
from typing import ClassVar

from pydantic import Field

from contracts.settings import ServiceSettings


class Settings(ServiceSettings):
    db_name: ClassVar[str] = "ws"
    port: int = 8004

    # Messages sent after auth when the client does not resume.
    chat_history_limit: int = 50
    # Seconds a client has to send its auth frame after the handshake.
    chat_auth_timeout: float = 5.0
    # Seconds the server waits after auth for an optional resume frame.
    chat_resume_grace: float = 0.3
    # The server sends {"type": "ping"} this often (seconds); nginx's read timeout is 75 s.
    chat_heartbeat_interval: float = 15.0
    # A client that has sent nothing (not even a pong) for this long is dropped as dead.
    chat_heartbeat_timeout: float = 45.0
    # Seconds between re-checks of a connected token against the revocation store.
    chat_revocation_check_interval: float = 30.0
    # Frames queued for one socket before the client is cut off as too slow.
    chat_send_queue: int = 256
    # Longest chat message accepted (characters).
    chat_max_text: int = 2000
    # Events handled at once per process (aio-pika runs prefetched callbacks concurrently). Two
    # events of one room in flight together may take their seq in either order; each socket
    # still gets every message once, in seq order. 1 keeps publish order (a single consumer).
    chat_consumer_prefetch: int = 8
    # A recommendations push identical to the previous one within this many seconds is dropped.
    chat_dedup_window: float = 600.0
    # The consumer holds an event (unacked) through a database or Redis outage this long
    # before it nacks it towards the delivery limit and the dead-letter queue.
    consumer_patience_seconds: float = Field(default=600.0, ge=0)


@lru_cache
def get_settings() -> Settings:
    return Settings()
