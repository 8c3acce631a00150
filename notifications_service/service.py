"""Reads and writes of the directory and the delivery log; every write commits at its end."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Text,
    Update,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import (
    Event,
    PasswordResetRequested,
    RecommendationsGenerated,
    UserRegistered,
    UserVerified,
    utcnow,
)
from notifications_service.config import Settings
from notifications_service.emails import (
    Composed,
    account_email,
    address_changed_email,
    recommendations_email,
)
from notifications_service.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    DigestFrequency,
    Recipient,
)
from notifications_service.unsubscribe import make_token

UNSUBSCRIBE_PATH = "/notifications/v1/unsubscribe/{token}"
DIGEST_FREQUENCIES = (DigestFrequency.DAILY, DigestFrequency.WEEKLY)
# The e-mails an opt-out stops; account e-mails (confirmation, reset, address change) go anyway.
RECOMMENDATION_KINDS = (DeliveryKind.RECOMMENDATIONS, DeliveryKind.DIGEST)
OPTED_OUT = "viewer opted out"


def event_key(kind: DeliveryKind, event_id: uuid.UUID) -> str:
    return f"{kind}:{event_id}"


def digest_key(user_id: uuid.UUID, period: str) -> str:
    return f"{DeliveryKind.DIGEST}:{user_id}:{period}"


def unsubscribe_url(settings: Settings, user_id: uuid.UUID) -> str:
    token = make_token(user_id, settings.unsubscribe_secret.get_secret_value())
    return settings.public_base_url.rstrip("/") + UNSUBSCRIBE_PATH.format(token=token)


def wants_recommendations(recipient: Recipient | None) -> bool:
    return (
        recipient is not None
        and recipient.is_verified
        and recipient.unsubscribed_at is None
        and recipient.digest_frequency != DigestFrequency.OFF
    )


def _still_wanted() -> ColumnElement[bool]:
    """`wants_recommendations` of the delivery's viewer, in SQL."""
    return (
        select(Recipient.user_id)
        .where(
            Recipient.user_id == Delivery.user_id,
            Recipient.is_verified.is_(True),
            Recipient.unsubscribed_at.is_(None),
            Recipient.digest_frequency != DigestFrequency.OFF,
        )
        .exists()
    )


async def _skip_unsent_recommendations(session: AsyncSession, user_id: uuid.UUID) -> None:
    """The opt-out's part in the delivery log, in its transaction: every recommendation e-mail
    of the viewer not sent yet (awaiting its picks, queued, or between retries) is skipped.

    The caller holds the recipient's row lock, which `record_recommendations` takes too, so no
    e-mail can be queued behind this statement's back; `fill_digest` and `claim_due` lock the
    delivery rows, and whichever of them and this statement comes second sees the other's
    outcome. One already leased to a sender is skipped as well: the attempt under way cannot
    be recalled, but `finish`, `defer` and `postpone` leave a skipped row as it is unless it
    was sent, so it is never tried again.
    """
    await session.execute(
        update(Delivery)
        .where(
            Delivery.user_id == user_id,
            Delivery.kind.in_(RECOMMENDATION_KINDS),
            Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.AWAITING)),
        )
        .values(status=DeliveryStatus.SKIPPED, last_error=OPTED_OUT),
        execution_options={"synchronize_session": False},
    )


# ---------------------------------------------------------------- directory


async def upsert_recipient(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    email: str,
    full_name: str | None = None,
    verified: bool = False,
) -> None:
    """Events may arrive out of order: verification is never undone, a name never blanked, and
    a confirmed address is replaced only by another confirmed one (a viewer who changed their
    address keeps their digests at the old one until the new one is confirmed)."""
    values = {"user_id": user_id, "email": email, "is_verified": verified}
    stmt = insert(Recipient).values(**values, full_name=full_name or "")
    updates = {
        "email": case(
            (Recipient.is_verified & ~stmt.excluded.is_verified, Recipient.email),
            else_=stmt.excluded.email,
        ),
        "is_verified": Recipient.is_verified | stmt.excluded.is_verified,
        "updated_at": func.now(),
    }
    if full_name:
        updates["full_name"] = stmt.excluded.full_name
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[Recipient.user_id], set_=updates)
    )


async def update_preferences(
    session: AsyncSession,
    recipient: Recipient,
    *,
    digest_frequency: DigestFrequency | None,
    subscribed: bool | None,
) -> Recipient:
    """`recipient` was read FOR UPDATE in this session. Switching between `immediate`, `daily`
    and `weekly` keeps the e-mails already queued (the viewer still wants picks); `off` or
    unsubscribing skips them, and re-subscribing does not bring them back."""
    if digest_frequency is not None:
        recipient.digest_frequency = digest_frequency
    if subscribed is True:
        recipient.unsubscribed_at = None
    elif subscribed is False and recipient.unsubscribed_at is None:
        recipient.unsubscribed_at = utcnow()
    if not wants_recommendations(recipient):
        await _skip_unsent_recommendations(session, recipient.user_id)
    await session.commit()
    return recipient


async def unsubscribe(session: AsyncSession, user_id: uuid.UUID) -> Recipient | None:
    recipient = await session.get(Recipient, user_id, with_for_update=True)
    if recipient is not None:
        if recipient.unsubscribed_at is None:
            recipient.unsubscribed_at = utcnow()
        await _skip_unsent_recommendations(session, user_id)
    await session.commit()
    return recipient


async def history(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, offset: int
) -> Sequence[Delivery]:
    rows = await session.scalars(
        select(Delivery)
        .where(Delivery.user_id == user_id)
        .order_by(Delivery.created_at.desc(), Delivery.delivery_id.desc())
        .limit(limit)
        .offset(offset)
    )
    return rows.all()


# ---------------------------------------------------------------- event handling


async def _queue_email(
    session: AsyncSession,
    *,
    kind: DeliveryKind,
    event: Event,
    user_id: uuid.UUID,
    to_address: str,
    composed: Composed | None,
    unsubscribe: str | None = None,
    skipped_because: str | None = None,
) -> bool:
    """Insert the e-mail unless its key (kind and event) exists: the idempotency record of the
    event.

    With `skipped_because` the row records a decision not to send, so that a redelivery
    of the event is a no-op too.
    """
    stmt = (
        insert(Delivery)
        .values(
            dedup_key=event_key(kind, event.event_id),
            kind=kind,
            status=DeliveryStatus.SKIPPED if skipped_because else DeliveryStatus.PENDING,
            event_id=event.event_id,
            user_id=user_id,
            to_address=to_address,
            subject=composed.subject if composed else None,
            body_text=composed.text if composed else None,
            body_html=composed.html if composed else None,
            unsubscribe_url=unsubscribe,
            last_error=skipped_because,
        )
        .on_conflict_do_nothing(index_elements=[Delivery.dedup_key])
        .returning(Delivery.delivery_id)
    )
    return (await session.execute(stmt)).first() is not None


async def _record_account_email(
    session: AsyncSession,
    settings: Settings,
    *,
    kind: DeliveryKind,
    event: UserRegistered | PasswordResetRequested,
    name: str,
    url: str,
) -> bool:
    """Confirmation and reset e-mails go out whatever the viewer's digest preference."""
    queued = await _queue_email(
        session,
        kind=kind,
        event=event,
        user_id=event.user_id,
        to_address=event.email,
        composed=account_email(kind, name=name, url=url, public_base_url=settings.public_base_url),
    )
    await session.commit()
    return queued


async def record_registration(
    session: AsyncSession, event: UserRegistered, settings: Settings
) -> bool:
    await upsert_recipient(
        session, user_id=event.user_id, email=event.email, full_name=event.full_name
    )
    if event.previous_email is not None:
        # Committed with the confirmation below, and as idempotent (keyed on the event).
        await _queue_email(
            session,
            kind=DeliveryKind.EMAIL_CHANGED,
            event=event,
            user_id=event.user_id,
            to_address=event.previous_email,
            composed=address_changed_email(
                name=event.full_name,
                new_address=event.email,
                public_base_url=settings.public_base_url,
            ),
        )
    return await _record_account_email(
        session,
        settings,
        kind=DeliveryKind.CONFIRMATION,
        event=event,
        name=event.full_name,
        url=event.confirm_url,
    )


async def record_verification(session: AsyncSession, event: UserVerified) -> None:
    await upsert_recipient(
        session,
        user_id=event.user_id,
        email=event.email,
        full_name=event.full_name,
        verified=True,
    )
    await session.commit()


async def record_reset_request(
    session: AsyncSession, event: PasswordResetRequested, settings: Settings
) -> bool:
    await upsert_recipient(session, user_id=event.user_id, email=event.email)
    recipient = await session.get(Recipient, event.user_id)
    return await _record_account_email(
        session,
        settings,
        kind=DeliveryKind.PASSWORD_RESET,
        event=event,
        name=recipient.full_name if recipient else "",
        url=event.reset_url,
    )


def _recommendations(
    recipient: Recipient, event: RecommendationsGenerated, settings: Settings
) -> tuple[Composed, str]:
    link = unsubscribe_url(settings, recipient.user_id)
    composed = recommendations_email(
        name=recipient.full_name,
        items=event.items,
        frequency=DigestFrequency(recipient.digest_frequency),
        unsubscribe_url=link,
        public_base_url=settings.public_base_url,
    )
    return composed, link


async def record_recommendations(
    session: AsyncSession, event: RecommendationsGenerated, settings: Settings
) -> bool:
    """An `immediate` viewer's picks, at most one e-mail per interval; others get digests."""
    # The row lock serialises concurrent events of one viewer, so the throttle holds.
    recipient = await session.get(Recipient, event.user_id, with_for_update=True)
    if (
        recipient is None
        or not wants_recommendations(recipient)
        or recipient.digest_frequency != DigestFrequency.IMMEDIATE
        or not event.items
    ):
        await session.rollback()
        return False
    now = utcnow()
    throttled = recipient.last_immediate_at is not None and (
        recipient.last_immediate_at
        > now - timedelta(seconds=settings.immediate_min_interval_seconds)
    )
    composed, link = _recommendations(recipient, event, settings)
    queued = await _queue_email(
        session,
        kind=DeliveryKind.RECOMMENDATIONS,
        event=event,
        user_id=recipient.user_id,
        to_address=recipient.email,
        composed=composed,
        unsubscribe=link,
        skipped_because="throttled: one e-mail per interval" if throttled else None,
    )
    if queued and not throttled:
        recipient.last_immediate_at = now
    await session.commit()
    return queued and not throttled


async def fill_digest(
    session: AsyncSession, event: RecommendationsGenerated, settings: Settings
) -> bool:
    """recom's answer to a digest request: the one awaiting digest of the viewer gets its picks.

    A second answer (a redelivery, or a request sent twice) finds nothing awaiting and does
    nothing, which makes the digest exactly-once per viewer and period.
    """
    found = (
        await session.execute(
            select(Delivery, Recipient)
            .outerjoin(Recipient, Recipient.user_id == Delivery.user_id)
            .where(
                Delivery.user_id == event.user_id,
                Delivery.kind == DeliveryKind.DIGEST,
                Delivery.status == DeliveryStatus.AWAITING,
            )
            .order_by(Delivery.created_at)
            .limit(1)
            .with_for_update(of=Delivery)
        )
    ).first()
    if found is None:
        await session.rollback()
        return False
    digest, recipient = found
    digest.event_id = event.event_id
    if recipient is None or not wants_recommendations(recipient) or not event.items:
        digest.status = DeliveryStatus.SKIPPED
        digest.last_error = "no picks" if wants_recommendations(recipient) else OPTED_OUT
        await session.commit()
        return False
    composed, link = _recommendations(recipient, event, settings)
    digest.status = DeliveryStatus.PENDING
    digest.to_address = recipient.email
    digest.subject = composed.subject
    digest.body_text = composed.text
    digest.body_html = composed.html
    digest.unsubscribe_url = link
    digest.next_attempt_at = func.now()  # the database clock, as claim_due compares with it
    await session.commit()
    return True


# ---------------------------------------------------------------- digest requests


def _take(
    where: list[ColumnElement[bool]], order: Any, limit: int, values: dict[str, Any]
) -> Update:
    """Update up to `limit` matching rows that no other transaction holds (SKIP LOCKED),
    so that concurrent schedulers and senders each take different rows."""
    picked = (
        select(Delivery.delivery_id)
        .where(*where)
        .order_by(order)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return update(Delivery).where(Delivery.delivery_id.in_(picked)).values(**values)


async def reserve_digests(
    session: AsyncSession,
    *,
    frequency: DigestFrequency,
    period: str,
    limit: int,
    signed_up_before: datetime | None = None,
) -> list[uuid.UUID]:
    """Insert an awaiting digest for up to `limit` due viewers that have none for the period
    (of those who signed up before `signed_up_before`, when given).

    The unique key makes a concurrent or repeated run insert nothing twice; only the
    viewers this call inserted are returned, to be requested from recom.
    """
    key = literal(f"{DeliveryKind.DIGEST}:", Text) + Recipient.user_id.cast(Text) + f":{period}"
    due = (
        select(
            key,
            literal(DeliveryKind.DIGEST.value),
            literal(DeliveryStatus.AWAITING.value),
            Recipient.user_id,
            literal(period),
            Recipient.email,
            literal(1),
            func.now(),
        )
        .where(
            Recipient.digest_frequency == frequency,
            Recipient.is_verified.is_(True),
            Recipient.unsubscribed_at.is_(None),
            Recipient.created_at < signed_up_before if signed_up_before is not None else true(),
            ~select(Delivery.delivery_id).where(Delivery.dedup_key == key).exists(),
        )
        .order_by(Recipient.user_id)
        .limit(limit)
    )
    stmt = (
        insert(Delivery)
        .from_select(
            [
                "dedup_key",
                "kind",
                "status",
                "user_id",
                "period",
                "to_address",
                "requests",
                "requested_at",
            ],
            due,
        )
        .on_conflict_do_nothing(index_elements=[Delivery.dedup_key])
        .returning(Delivery.user_id)
    )
    user_ids = [row[0] for row in await session.execute(stmt)]
    await session.commit()
    return user_ids


async def forget_requests(
    session: AsyncSession, user_ids: Sequence[uuid.UUID], period: str
) -> None:
    """The request never reached the broker: make these digests due for re-request at once."""
    await session.execute(
        update(Delivery)
        .where(
            Delivery.dedup_key.in_([digest_key(user_id, period) for user_id in user_ids]),
            Delivery.status == DeliveryStatus.AWAITING,
        )
        .values(requested_at=None, requests=Delivery.requests - 1)
    )
    await session.commit()


async def stale_digests(
    session: AsyncSession, settings: Settings, *, limit: int
) -> list[tuple[uuid.UUID, str]]:
    """Awaiting digests whose request was lost (crash, broker, recom): request again, or give up."""
    cutoff = func.now() - timedelta(seconds=settings.digest_answer_timeout_seconds)
    stale = or_(Delivery.requested_at.is_(None), Delivery.requested_at < cutoff)
    awaiting = and_(
        Delivery.kind == DeliveryKind.DIGEST, Delivery.status == DeliveryStatus.AWAITING
    )
    await session.execute(
        update(Delivery)
        .where(awaiting, stale, Delivery.requests >= settings.digest_max_requests)
        .values(status=DeliveryStatus.FAILED, last_error="no picks from recom")
    )
    rows = await session.execute(
        _take(
            [awaiting, stale],
            Delivery.delivery_id,
            limit,
            {"requests": Delivery.requests + 1, "requested_at": func.now()},
        ).returning(Delivery.user_id, Delivery.period)
    )
    result = [(user_id, period) for user_id, period in rows if user_id and period]
    await session.commit()
    return result


# ---------------------------------------------------------------- sending


async def claim_due(session: AsyncSession, settings: Settings, *, limit: int) -> list[Delivery]:
    """Lease up to `limit` due e-mails to this sender; a crashed sender's lease runs out.

    A recommendation e-mail whose viewer no longer wants any is skipped instead of leased:
    the opt-out skips those queued when it happens, this catches any queued before that was
    so or opted out by another path.
    """
    now = func.now()
    due = [
        Delivery.status == DeliveryStatus.PENDING,
        Delivery.next_attempt_at <= now,
        or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
    ]
    unwanted = Delivery.kind.in_(RECOMMENDATION_KINDS) & ~_still_wanted()
    lease = {
        "claimed_until": case(
            (unwanted, None), else_=now + timedelta(seconds=settings.delivery_lease_seconds)
        ),
        "status": case((unwanted, DeliveryStatus.SKIPPED.value), else_=Delivery.status),
        "last_error": case((unwanted, OPTED_OUT), else_=Delivery.last_error),
    }
    rows = await session.scalars(
        _take(due, Delivery.next_attempt_at, limit, lease).returning(Delivery),
        execution_options={"synchronize_session": False},
    )
    claimed = sorted(
        (d for d in rows.all() if d.status == DeliveryStatus.PENDING),
        key=lambda d: d.next_attempt_at,
    )
    await session.commit()
    return claimed


def finish(delivery_id: int, status: DeliveryStatus, error: str | None = None) -> Update:
    """An attempt's outcome, run on its own (autocommit) right after the SMTP reply.

    Only a sent e-mail overrides an opt-out that skipped it during the attempt.
    """
    statement = update(Delivery).where(Delivery.delivery_id == delivery_id)
    if status != DeliveryStatus.SENT:
        statement = statement.where(Delivery.status == DeliveryStatus.PENDING)
    return statement.values(
        status=status,
        attempts=Delivery.attempts + 1,
        sent_at=func.now() if status == DeliveryStatus.SENT else None,
        claimed_until=None,
        last_error=error,
    )


def retry_delay(settings: Settings, attempts: int) -> float:
    return float(
        min(settings.retry_base_seconds * 2 ** max(attempts - 1, 0), settings.retry_max_seconds)
    )


def defer(delivery: Delivery, error: str, settings: Settings) -> tuple[Update, datetime | None]:
    """Count the attempt and back off; past the retry window the e-mail is failed for good.

    Returns the statement and when the e-mail is next due (None once failed).
    """
    attempts = delivery.attempts + 1
    now = utcnow()
    if delivery.created_at < now - timedelta(seconds=settings.retry_window_seconds):
        error = f"gave up after {attempts} attempts: {error}"
        return finish(delivery.delivery_id, DeliveryStatus.FAILED, error), None
    next_attempt = now + timedelta(seconds=retry_delay(settings, attempts))
    statement = (
        update(Delivery)
        .where(
            Delivery.delivery_id == delivery.delivery_id,
            Delivery.status == DeliveryStatus.PENDING,
        )
        .values(
            attempts=attempts, next_attempt_at=next_attempt, claimed_until=None, last_error=error
        )
    )
    return statement, next_attempt


def postpone(delivery_ids: Sequence[int], until: datetime) -> Update:
    """Release claimed e-mails not tried because the server is unreachable, without an attempt."""
    return (
        update(Delivery)
        .where(Delivery.delivery_id.in_(delivery_ids), Delivery.status == DeliveryStatus.PENDING)
        .values(next_attempt_at=until, claimed_until=None)
    )
