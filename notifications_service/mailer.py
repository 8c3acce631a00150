"""SMTP with aiosmtplib: builds the MIME message of a delivery and sorts failures into retry or give up."""

from __future__ import annotations

import hashlib
import logging
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formataddr, formatdate, parseaddr
from types import TracebackType

import aiosmtplib

from notifications_service.config import Settings
from notifications_service.models import Delivery

logger = logging.getLogger(__name__)


UNFOLDED = compat32.clone(max_line_length=None, linesep="\r\n")


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


def _part(content: str, subtype: str) -> MIMEText:
    charset = Charset("utf-8")
    charset.body_encoding = QP
    return MIMEText(content, subtype, charset)  # type: ignore[arg-type]


def build_message(delivery: Delivery, sender: str) -> Message:
    """multipart/alternative, text then HTML. The compat32 MIME classes build and flatten
    three times faster than EmailMessage's default policy, which matters at 10,000 digests."""
    assert delivery.to_address
    assert delivery.subject is not None
    message = MIMEMultipart("alternative")
    name, address = parseaddr(sender)
    message["From"] = formataddr((name, address), charset="utf-8")
    message["To"] = delivery.to_address
    message["Subject"] = _header(delivery.subject)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(delivery.dedup_key, sender)
    message["X-Cinema-Kind"] = delivery.kind
    if delivery.unsubscribe_url:
        message["List-Unsubscribe"] = f"<{delivery.unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.attach(_part(delivery.body_text or "", "plain"))
    if delivery.body_html:
        message.attach(_part(delivery.body_html, "html"))
    return message


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
        # Flattened here, unfolded: a long List-Unsubscribe URL stays on one header line.
        content = build_message(delivery, sender).as_bytes(policy=UNFOLDED)
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
