"""SMTP with aiosmtplib: writes the MIME message of a delivery and sorts failures into retry or give up."""

from __future__ import annotations

import hashlib
import logging
import quopri
import secrets
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from functools import lru_cache
from types import TracebackType

import aiosmtplib

from notifications_service.config import Settings
from notifications_service.models import Delivery

logger = logging.getLogger(__name__)


class TemporaryFailure(Exception):
    """Try again later: a 4xx reply, a refused or dropped connection, a timeout."""


class PermanentFailure(Exception):
    """A 5xx reply: sending the same message again would fail the same way."""


def message_id(dedup_key: str, sender: str) -> str:
    """Derived from the idempotency key, so a duplicate (the one crash window) is recognisable."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "cinema.local"
    return f"<{hashlib.sha256(dedup_key.encode()).hexdigest()[:40]}@{domain}>"


def _header(value: str) -> str:
    # Header values cannot carry line breaks; a title in the subject must not inject headers.
    value = " ".join(value.split())
    return value if value.isascii() else Header(value, "utf-8").encode()


@lru_cache
def _from_header(sender: str) -> str:
    return formataddr(parseaddr(sender), charset="utf-8")


def render_mime(delivery: Delivery, sender: str) -> bytes:
    """multipart/alternative (text, then HTML) in quoted-printable UTF-8, written directly:
    the email package's generator spends about 2 ms of CPU per message folding headers,
    which at 10,000 digests is most of the sender's time. Line ends are LF; aiosmtplib
    turns them into CRLF on the wire."""
    assert delivery.to_address
    assert delivery.subject is not None
    # "=_" never occurs in quoted-printable output, so the boundary cannot clash with a body.
    boundary = f"=_{secrets.token_hex(12)}"
    headers = [
        f"From: {_from_header(sender)}",
        f"To: {_header(delivery.to_address)}",
        f"Subject: {_header(delivery.subject)}",
        f"Date: {formatdate(usegmt=True)}",
        f"Message-ID: {message_id(delivery.dedup_key, sender)}",
        f"X-Cinema-Kind: {delivery.kind}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
    ]
    if delivery.unsubscribe_url:
        headers.append(f"List-Unsubscribe: <{delivery.unsubscribe_url}>")
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    chunks = ["\n".join(headers).encode(), b"\n\n"]
    parts = [("plain", delivery.body_text or "")]
    if delivery.body_html:
        parts.append(("html", delivery.body_html))
    for subtype, content in parts:
        chunks.append(
            f"--{boundary}\nContent-Type: text/{subtype}; charset=utf-8\n"
            "Content-Transfer-Encoding: quoted-printable\n\n".encode()
        )
        chunks.append(quopri.encodestring(content.encode()))
        chunks.append(b"\n")
    chunks.append(f"--{boundary}--\n".encode())
    return b"".join(chunks)


def _classify(exc: Exception) -> Exception:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refusal.code for refusal in exc.recipients]
        if codes and all(code >= 500 for code in codes):
            return PermanentFailure(str(exc))
        return TemporaryFailure(str(exc))
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 500:
        return PermanentFailure(f"{exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return TemporaryFailure(f"{exc.code} {exc.message}")
    return TemporaryFailure(repr(exc))


class SmtpConnection:
    """One SMTP session reused for many messages; reconnects after any failure."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self._settings
        client = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            timeout=settings.smtp_timeout,
            start_tls=settings.smtp_starttls,
            username=settings.smtp_user or None,
            password=settings.smtp_password.get_secret_value() or None,
        )
        await client.connect()
        return client

    async def send(self, delivery: Delivery) -> None:
        """Hand one message to the server; raise TemporaryFailure or PermanentFailure."""
        sender = self._settings.smtp_from
        content = render_mime(delivery, sender)
        try:
            if self._client is None or not self._client.is_connected:
                self._client = await self._connect()
            await self._client.sendmail(parseaddr(sender)[1], [delivery.to_address or ""], content)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            raise _classify(exc) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()

    async def __aenter__(self) -> SmtpConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
