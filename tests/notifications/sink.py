"""An in-process SMTP server (aiosmtpd) that keeps what it accepts and can refuse on cue."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections import Counter
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.support import free_port


@dataclass(frozen=True, slots=True)
class Received:
    recipient: str
    message: EmailMessage
    at: float


class SmtpSink:
    """Runs aiosmtpd in its own thread on a free port, as a real SMTP peer of the service."""

    def __init__(self, *, keep_messages: bool = True) -> None:
        self.port = free_port()
        self.keep_messages = keep_messages
        self.received: list[Received] = []
        self.attempts: Counter[str] = Counter()
        # Replies to give instead of 250, per recipient, consumed one per DATA.
        self.script: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        recipient = envelope.rcpt_tos[0]
        with self._lock:
            self.attempts[recipient] += 1
            replies = self.script.get(recipient)
            if replies:
                return replies.pop(0)
            message = (
                email.message_from_bytes(envelope.content, policy=email.policy.default)
                if self.keep_messages
                else EmailMessage()
            )
            self.received.append(Received(recipient, message, time.perf_counter()))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [r.message for r in self.received if r.recipient == address]
