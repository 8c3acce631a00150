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
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support import free_port


@dataclass(frozen=True, slots=True)
class Received:
    recipient: str
    message: EmailMessage
    at: float
    # Whether the session carrying it was encrypted (STARTTLS or implicit TLS).
    tls: bool = False


class SmtpSink:
    """Runs aiosmtpd in its own thread on a free port, as a real SMTP peer of the service."""

    def __init__(self, *, keep_messages: bool = True, **smtp_options: Any) -> None:
        """`smtp_options` go to aiosmtpd: `enable_SMTPUTF8=False`, `tls_context` (offers
        STARTTLS), `ssl_context` (implicit TLS), `auth_require_tls=False`..."""
        self.port = free_port()
        self.keep_messages = keep_messages
        self.received: list[Received] = []
        self.attempts: Counter[str] = Counter()
        # Replies to give instead of 250, per recipient, consumed one per DATA.
        self.script: dict[str, list[str]] = {}
        # The same for RCPT TO, consumed one per RCPT.
        self.rcpt_script: dict[str, list[str]] = {}
        # While set, MAIL FROM gets this reply (a relay refusing the sender).
        self.mail_reply: str | None = None
        # AUTH accepts only this password (offered only with `auth_require_tls=False` or TLS).
        self.password = ""
        self.logins: list[str] = []
        self._lock = threading.Lock()
        if "auth_require_tls" in smtp_options:
            smtp_options.setdefault("authenticator", self._authenticate)
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **smtp_options)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        with self._lock:
            self.logins.append(auth_data.login.decode())
        # handled=False: aiosmtpd answers a failure with 535 itself.
        return AuthResult(success=auth_data.password.decode() == self.password, handled=False)

    async def handle_MAIL(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self._lock:
            replies = self.rcpt_script.get(address)
            if replies:
                self.attempts[address] += 1
                return replies.pop(0)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

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
            tls = server.transport.get_extra_info("ssl_object") is not None
            received = Received(recipient, message, time.perf_counter(), tls)
            self.received.append(received)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [r.message for r in self.received if r.recipient == address]
