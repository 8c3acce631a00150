"""The sender: workers lease due e-mails from the delivery log and hand them to SMTP.

Exactly once rests on the delivery row: consumers insert it (unique key) before anything is
sent, a worker leases it, sends it, and marks it sent in its own commit right after the
server's 250. The one window left is a crash between that 250 and the commit: the lease
runs out and the e-mail is sent again. The Message-ID derived from the key makes such a
duplicate recognisable (and many mail stores drop it). Retries live in the table, not in
memory, so a restart resumes them.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts.errors import DEPENDENCY_ERRORS
from contracts.events import utcnow
from notifications_service import service
from notifications_service.config import Settings
from notifications_service.mailer import PermanentFailure, SmtpConnection, TemporaryFailure
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
                except PermanentFailure as exc:
                    logger.warning("delivery %s refused for good: %s", delivery.dedup_key, exc)
                    await db.execute(
                        service.finish(delivery.delivery_id, DeliveryStatus.FAILED, str(exc))
                    )
                    EMAILS.labels(str(delivery.kind), "failed").inc()
                    continue
                except TemporaryFailure as exc:
                    logger.info("delivery %s deferred: %s", delivery.dedup_key, exc)
                    statement, retry_at = service.defer(delivery, str(exc), self._settings)
                    await db.execute(statement)
                    rest = [d.delivery_id for d in batch[position + 1 :]]
                    if rest:
                        # The server is likely down for the rest too; no attempt is charged.
                        await db.execute(service.postpone(rest, retry_at or utcnow()))
                    return
                await db.execute(service.finish(delivery.delivery_id, DeliveryStatus.SENT))
                EMAILS.labels(str(delivery.kind), "sent").inc()
