"""SMTP with aiosmtplib: writes a delivery's MIME message and sorts failures by whose they are."""

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
from email_validator import EmailNotValidError, validate_email

from notifications_service.config import Settings
from notifications_service.models import Delivery

logger = logging.getLogger(__name__)

# 421: the server is closing the session, whatever command it answers.
SERVICE_CLOSING = aiosmtplib.SMTPStatus.domain_unavailable
SMTPUTF8 = ("SMTPUTF8",)


class TemporaryFailure(Exception):
    """This message, later: a 4xx reply to its recipient or its content (greylisting, a full
    mailbox)."""


class PermanentFailure(Exception):
    """This message, never: a 5xx reply to its recipient or its content, or an address the
    server cannot carry; sending it again would fail the same way."""


class ServerUnavailable(Exception):
    """No message can go now, through no fault of this one: the server is unreachable, drops
    the connection, times out or answers 421, or refuses the session itself (greeting, EHLO,
    STARTTLS, AUTH, the sender), which is a fault of the server or of the configuration."""


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


def envelope_recipient(address: str) -> tuple[str, bool]:
    """The address as RCPT TO carries it, and whether that needs SMTPUTF8 (RFC 6531).

    An internationalised domain goes in its ASCII (IDNA) form, so only a non-ASCII local part
    needs a server that speaks SMTPUTF8."""
    if address.isascii():
        return address, False
    try:
        ascii_address = validate_email(address, check_deliverability=False).ascii_email
    except EmailNotValidError as exc:
        raise PermanentFailure(f"not a valid address: {exc}") from exc
    return (ascii_address, False) if ascii_address else (address, True)


def render_mime(delivery: Delivery, sender: str, recipient: str) -> bytes:
    """multipart/alternative (text, then HTML) in quoted-printable UTF-8, written directly:
    the email package's generator spends about 2 ms of CPU per message folding headers,
    which at 10,000 digests is most of the sender's time. Line ends are LF; aiosmtplib
    turns them into CRLF on the wire. `recipient` is the envelope's form of the address: an
    address that needs SMTPUTF8 stands in the header as UTF-8 (RFC 6532), never as an
    encoded word, which no mail program reads as an address."""
    assert recipient
    assert delivery.subject is not None
    # "=_" never occurs in quoted-printable output, so the boundary cannot clash with a body.
    boundary = f"=_{secrets.token_hex(12)}"
    headers = [
        f"From: {_from_header(sender)}",
        f"To: {' '.join(recipient.split())}",
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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    return repr(exc)


def _classify(exc: Exception) -> Exception:
    """Only a refusal of this message's recipient or content is about the message; every other
    failure within a transaction (a dropped connection, a timeout, a 421, a refused sender)
    is about the server."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refusal.code for refusal in exc.recipients]
        text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        if SERVICE_CLOSING in codes:
            return ServerUnavailable(text)
        if codes and all(code >= 500 for code in codes):
            return PermanentFailure(text)
        return TemporaryFailure(text)
    if isinstance(exc, aiosmtplib.SMTPDataError):
        if exc.code == SERVICE_CLOSING:
            return ServerUnavailable(_describe(exc))
        failure = PermanentFailure if exc.code >= 500 else TemporaryFailure
        return failure(_describe(exc))
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        # sendmail raises it, before MAIL FROM, only for SMTPUTF8 (the session stays clean).
        return PermanentFailure(f"the address needs SMTPUTF8, which the server lacks: {exc}")
    return ServerUnavailable(_describe(exc))


class SmtpConnection:
    """One SMTP session reused for many messages; dropped after any failure, so a session left
    in an unknown state never carries the next message."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sender = parseaddr(settings.smtp_from)[1]
        self._client: aiosmtplib.SMTP | None = None

    async def _session(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            return self._client
        self._client = None
        settings = self._settings
        client = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            timeout=settings.smtp_timeout,
            use_tls=settings.smtp_tls,
            start_tls=settings.smtp_start_tls,
            username=settings.smtp_user or None,
            password=settings.smtp_password.get_secret_value() or None,
        )
        try:
            await client.connect()
        except Exception as exc:
            # Whatever the cause (refused, greeting, TLS, AUTH), no message could go.
            client.close()
            raise ServerUnavailable(_describe(exc)) from exc
        self._client = client
        return client

    async def send(self, delivery: Delivery) -> None:
        """Hand one message to the server; raise TemporaryFailure, PermanentFailure or
        ServerUnavailable, or anything else unclassified after dropping the session."""
        recipient, smtputf8 = envelope_recipient(delivery.to_address or "")
        content = render_mime(delivery, self._settings.smtp_from, recipient)
        client = await self._session()
        try:
            await client.sendmail(
                self._sender, [recipient], content, mail_options=SMTPUTF8 if smtputf8 else None
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            raise _classify(exc) from exc
        except BaseException:
            # Mid-transaction for all we know: QUIT could wait on a desynchronised session.
            self._abort()
            raise

    def _abort(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

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
