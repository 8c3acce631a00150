"""The sender: workers lease due e-mails from the delivery log and hand them to SMTP.

Exactly once rests on the delivery row: consumers insert it (unique key) before anything is
sent, a worker leases it, sends it, and marks it sent in its own commit right after the
server's 250. The one window left is a crash between that 250 and the commit: the lease
runs out and the e-mail is sent again. The Message-ID derived from the key makes such a
duplicate recognisable (and many mail stores drop it). Retries live in the table, not in
memory, so a restart resumes them.

Who is at fault decides what a failure costs. A refusal of the message (5xx to its recipient
or content) fails it; a 4xx to it defers it alone, charged an attempt. A server that cannot
take any message (unreachable, 421, or refusing the session: greeting, TLS, AUTH, the sender)
charges nobody: the rest of the batch waits with a backoff that grows while the server stays
unusable, so a wrong password or a relay down for hours loses no e-mail younger than the
retry window, and fixing it sends them all.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from datetime import timedelta

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from contracts.errors import DEPENDENCY_ERRORS
from contracts.events import utcnow
from notifications_service import service
from notifications_service.config import Settings
from notifications_service.mailer import (
    PermanentFailure,
    ServerUnavailable,
    SmtpConnection,
    TemporaryFailure,
)
from notifications_service.models import Delivery, DeliveryStatus

logger = logging.getLogger(__name__)

EMAILS = Counter(
    "notifications_emails_total", "E-mails handed to SMTP, by kind and outcome", ["kind", "outcome"]
)


class Dispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
    ) -> None:
        self._sessionmaker = sessionmaker
        # One statement per outcome, committed at once: no BEGIN/COMMIT round trips.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._settings = settings
        self._wake = asyncio.Event()
        # Server failures in a row, across this process's connections; the wait grows with them.
        self._server_failures = 0

    def wake(self) -> None:
        """A consumer committed a new pending e-mail: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self._settings.smtp_connections)))

    async def _worker(self) -> None:
        async with SmtpConnection(self._settings) as connection:
            while True:
                # Cleared before the claim, so a wake-up after it is never lost.
                self._wake.clear()
                try:
                    async with self._sessionmaker() as session:
                        batch = await service.claim_due(
                            session, self._settings, limit=self._settings.delivery_batch_size
                        )
                    if batch:
                        await self._send(connection, batch)
                        continue
                except DEPENDENCY_ERRORS as exc:
                    logger.warning("delivery log unreachable: %r", exc)
                except Exception:
                    # A bug must not stop the sender for good; the lease brings the batch back.
                    logger.exception("sender worker failed; going on")
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.delivery_poll_seconds):
                        await self._wake.wait()

    async def _send(self, connection: SmtpConnection, batch: list[Delivery]) -> None:
        async with self._autocommit.connect() as db:
            for position, delivery in enumerate(batch):
                try:
                    await connection.send(delivery)
                except ServerUnavailable as exc:
                    await self._postpone(db, batch[position:], exc)
                    return
                except PermanentFailure as exc:
                    logger.warning("delivery %s refused for good: %s", delivery.dedup_key, exc)
                    await db.execute(
                        service.finish(delivery.delivery_id, DeliveryStatus.FAILED, str(exc))
                    )
                    EMAILS.labels(str(delivery.kind), "failed").inc()
                except TemporaryFailure as exc:
                    logger.info("delivery %s deferred: %s", delivery.dedup_key, exc)
                    await db.execute(service.defer(delivery, str(exc), self._settings)[0])
                except Exception as exc:
                    # A bug met by this e-mail: it is charged and retried like a 4xx (and
                    # given up after the window), and the rest of the batch goes on.
                    logger.exception("delivery %s failed unexpectedly", delivery.dedup_key)
                    await db.execute(service.defer(delivery, repr(exc), self._settings)[0])
                else:
                    await db.execute(service.finish(delivery.delivery_id, DeliveryStatus.SENT))
                    EMAILS.labels(str(delivery.kind), "sent").inc()
                self._server_failures = 0

    async def _postpone(
        self, db: AsyncConnection, waiting: list[Delivery], exc: ServerUnavailable
    ) -> None:
        """The server failed, not these e-mails: none is charged an attempt. Only those older
        than the retry window are given up, as they would be after any failed attempt."""
        self._server_failures += 1
        delay = service.retry_delay(self._settings, self._server_failures)
        settings = self._settings
        logger.error(
            "SMTP server %s:%s unusable (%d in a row), %d e-mails wait %.1f s: %s",
            settings.smtp_host,
            settings.smtp_port,
            self._server_failures,
            len(waiting),
            delay,
            exc,
        )
        now = utcnow()
        expired = now - timedelta(seconds=settings.retry_window_seconds)
        error = f"SMTP server unusable: {exc}"
        for delivery in waiting:
            if delivery.created_at < expired:
                await db.execute(service.defer(delivery, error, settings)[0])
                EMAILS.labels(str(delivery.kind), "failed").inc()
        later = [d.delivery_id for d in waiting if d.created_at >= expired]
        if later:
            await db.execute(
                service.postpone(later, now + timedelta(seconds=delay)).values(last_error=error)
            )
