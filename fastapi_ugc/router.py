"""The ratings API: validate, authorise, then publish; 202 once RabbitMQ has confirmed."""

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from contracts.events import RatingDeleted, RatingSubmitted
from contracts.tokens import AUTH_RESPONSES, CurrentUser, NotVerified, TokenClaims
from fastapi_ugc.config import get_settings
from fastapi_ugc.schemas import RatingAccepted, RatingCreate, RatingDeletionAccepted
from fastapi_ugc.service import Intake, accept_rating_event

router = APIRouter(prefix="/ugc/v1", tags=["ratings"])


async def rating_user(claims: CurrentUser) -> TokenClaims:
    if not claims.is_verified and not get_settings().ratings_allow_unverified:
        raise NotVerified
    return claims


RatingUser = Annotated[TokenClaims, Depends(rating_user)]


# One dependency for Redis, the broker and the settings: FastAPI resolves each dependency on
# every request, and this is the hottest write path.
async def get_intake(request: Request) -> Intake:
    return request.app.state.intake


IntakeDep = Annotated[Intake, Depends(get_intake)]
IdempotencyKey = Annotated[
    uuid.UUID | None,
    Header(
        alias="Idempotency-Key",
        description="A UUID chosen by the client; a retry with the same key rates only once "
        "and becomes the event_id.",
    ),
]

RESPONSES: dict[int | str, dict[str, object]] = {
    **AUTH_RESPONSES,
    403: {"description": "USER_NOT_VERIFIED: the viewer has not confirmed the e-mail address"},
    422: {"description": "VALIDATION_ERROR, or IDEMPOTENCY_KEY_REUSED for another request"},
    503: {"description": "BROKER_UNAVAILABLE (not accepted, retry after Retry-After seconds)"},
}


@router.post(
    "/ratings",
    status_code=202,
    summary="Rate a film (1-10); accepted once RabbitMQ has confirmed the event",
    responses=RESPONSES,
)
async def submit_rating(
    rating: RatingCreate,
    user: RatingUser,
    intake: IntakeDep,
    idempotency_key: IdempotencyKey = None,
) -> RatingAccepted:
    # UGC's clock orders a viewer's ratings of a film; recom keeps the newest.
    event = RatingSubmitted(
        user_id=user.user_id,
        movie_id=rating.movie_id,
        score=rating.score,
        event_id=idempotency_key or uuid.uuid4(),
        occurred_at=datetime.now(UTC),
    )
    accepted = await accept_rating_event(intake, event, idempotent=idempotency_key is not None)
    assert isinstance(accepted, RatingSubmitted)
    return RatingAccepted(
        event_id=accepted.event_id,
        movie_id=accepted.movie_id,
        score=accepted.score,
        occurred_at=accepted.occurred_at,
    )


@router.delete(
    "/ratings/{movie_id}",
    status_code=202,
    summary="Withdraw a rating; accepted once RabbitMQ has confirmed the event",
    responses=RESPONSES,
)
async def delete_rating(
    movie_id: uuid.UUID,
    user: RatingUser,
    intake: IntakeDep,
    idempotency_key: IdempotencyKey = None,
) -> RatingDeletionAccepted:
    event = RatingDeleted(
        user_id=user.user_id,
        movie_id=movie_id,
        event_id=idempotency_key or uuid.uuid4(),
        occurred_at=datetime.now(UTC),
    )
    accepted = await accept_rating_event(intake, event, idempotent=idempotency_key is not None)
    return RatingDeletionAccepted(
        event_id=accepted.event_id, movie_id=accepted.movie_id, occurred_at=accepted.occurred_at
    )
