"""HTTP routes: the viewer's preferences and history, the unsubscribe link, a digest run on demand."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import HTMLResponse

from contracts.broker import PublishFailed, publish_event
from contracts.resources import SessionDep
from contracts.tokens import AUTH_RESPONSES, CurrentUser, SuperUser
from notifications_service import service
from notifications_service.config import get_settings
from notifications_service.emails import unsubscribe_page
from notifications_service.errors import (
    BrokerUnavailable,
    RecipientNotFound,
    UnsubscribeTokenInvalid,
)
from notifications_service.models import DigestFrequency, Recipient
from notifications_service.scheduler import run_digest_round
from notifications_service.schemas import (
    DeliveryRead,
    DigestRunCreate,
    DigestRunRead,
    HistoryRead,
    PreferencesRead,
    PreferencesUpdate,
    UnsubscribeRead,
)
from notifications_service.unsubscribe import read_token

router = APIRouter(prefix="/notifications/v1", tags=["notifications"])

NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"description": "The viewer is not in the e-mail directory (RECIPIENT_NOT_FOUND)"}
}
BAD_TOKEN: dict[int | str, dict[str, object]] = {
    400: {"description": "Malformed or tampered unsubscribe token"}
}


def _preferences(recipient: Recipient) -> PreferencesRead:
    return PreferencesRead(
        user_id=recipient.user_id,
        email=recipient.email,
        is_verified=recipient.is_verified,
        digest_frequency=DigestFrequency(recipient.digest_frequency),
        subscribed=recipient.unsubscribed_at is None,
    )


@router.get(
    "/preferences",
    summary="The viewer's digest frequency and subscription",
    responses={**AUTH_RESPONSES, **NOT_FOUND},
)
async def read_preferences(session: SessionDep, claims: CurrentUser) -> PreferencesRead:
    recipient = await session.get(Recipient, claims.user_id)
    if recipient is None:
        raise RecipientNotFound
    return _preferences(recipient)


@router.put(
    "/preferences",
    summary="Change the digest frequency (off, immediate, daily, weekly) or re-subscribe",
    responses={**AUTH_RESPONSES, **NOT_FOUND},
)
async def update_preferences(
    body: PreferencesUpdate, session: SessionDep, claims: CurrentUser
) -> PreferencesRead:
    recipient = await session.get(Recipient, claims.user_id, with_for_update=True)
    if recipient is None:
        raise RecipientNotFound
    recipient = await service.update_preferences(
        session, recipient, digest_frequency=body.digest_frequency, subscribed=body.subscribed
    )
    return _preferences(recipient)


@router.get(
    "/history", summary="E-mails sent to the viewer, newest first", responses=AUTH_RESPONSES
)
async def read_history(
    session: SessionDep,
    claims: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> HistoryRead:
    rows = await service.history(session, claims.user_id, limit=limit, offset=offset)
    return HistoryRead(items=[DeliveryRead.model_validate(row) for row in rows])


def _token_user(token: str) -> uuid.UUID:
    user_id = read_token(token, get_settings().unsubscribe_secret.get_secret_value())
    if user_id is None:
        raise UnsubscribeTokenInvalid
    return user_id


@router.get(
    "/unsubscribe/{token}",
    summary="A page that confirms the opt-out with a button (mail scanners only GET)",
    response_class=HTMLResponse,
    responses={**BAD_TOKEN, **NOT_FOUND},
)
async def show_unsubscribe(token: str, session: SessionDep, request: Request) -> HTMLResponse:
    recipient = await session.get(Recipient, _token_user(token))
    if recipient is None:
        raise RecipientNotFound
    return HTMLResponse(
        unsubscribe_page(email=recipient.email, action=str(request.url.path), done=False)
    )


@router.post(
    "/unsubscribe/{token}",
    summary="One-click opt-out from recommendation e-mails (RFC 8058); no session needed",
    responses={
        **BAD_TOKEN,
        **NOT_FOUND,
        200: {"content": {"text/html": {}}, "description": "JSON, or a page for browsers"},
    },
    response_model=UnsubscribeRead,
)
async def unsubscribe(token: str, session: SessionDep, request: Request) -> object:
    recipient = await service.unsubscribe(session, _token_user(token))
    if recipient is None:
        raise RecipientNotFound
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(unsubscribe_page(email=recipient.email, action="", done=True))
    return UnsubscribeRead(user_id=recipient.user_id)


@router.post(
    "/digests/run",
    summary="Run a digest round now (superuser): still one digest per viewer and period",
    responses={
        **AUTH_RESPONSES,
        403: {"description": "Not a superuser"},
        503: {"description": "Broker down"},
    },
)
async def run_digests(
    request: Request,
    _: SuperUser,
    body: Annotated[DigestRunCreate | None, Body()] = None,
) -> DigestRunRead:
    state = request.app.state
    try:
        requested = await run_digest_round(
            state.sessionmaker,
            partial(publish_event, state.broker),
            get_settings(),
            force=(body or DigestRunCreate()).force,
        )
    except PublishFailed as exc:
        raise BrokerUnavailable from exc
    return DigestRunRead(requested=requested)
