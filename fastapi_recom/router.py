"""The recommender's endpoints: personal picks, what recom holds, popular films, similar films."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from contracts.app import json_response
from contracts.tokens import AUTH_RESPONSES, CurrentUser, Forbidden
from fastapi_recom.dependencies import LoadedDep
from fastapi_recom.errors import MovieNotFound
from fastapi_recom.events import publish_in_background
from fastapi_recom.recommender import STRATEGY_POPULAR, Pick, TitleCache
from fastapi_recom.schemas import GeneralRead, RatingsPage, RecommendationsRead, SimilarMoviesRead

router = APIRouter(prefix="/recom/v1", tags=["recommendations"])

Limit = Annotated[int, Query(ge=1, le=100, description="How many films, 1..100")]
LOADING: dict[int | str, dict[str, Any]] = {
    503: {"description": "Rating matrix still loading, or a dependency is down"}
}
FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"description": "Neither that user nor a superuser"}
}


def _pick(pick: Pick, titles: TitleCache) -> dict[str, Any]:
    return {
        "movie_id": pick.movie_id,
        "title": titles.get(pick.movie_id),
        "score": pick.score,
        "reason": pick.reason,
        "source": pick.source,
        "neighbours": pick.neighbours,
        "neighbour_mean_score": pick.neighbour_mean_score,
        "ratings": pick.ratings,
        "mean_score": pick.mean_score,
    }


def _parse_exclude(values: list[str]) -> list[uuid.UUID]:
    """`exclude=a&exclude=b` and `exclude=a,b` alike."""
    ids: list[uuid.UUID] = []
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            try:
                ids.append(uuid.UUID(part.strip()))
            except ValueError:
                raise RequestValidationError(
                    [{"loc": ("query", "exclude"), "msg": "not a UUID", "type": "uuid_parsing"}]
                ) from None
    return ids


@router.get(
    "/user/{user_id}",
    response_model=RecommendationsRead,
    summary="Personal picks of one viewer",
    responses={**AUTH_RESPONSES, **FORBIDDEN, **LOADING},
)
async def get_user_recommendations(
    request: Request,
    user_id: uuid.UUID,
    claims: CurrentUser,
    loaded: LoadedDep,
    limit: Limit = 10,
    exclude: Annotated[
        list[str], Query(description="Film ids not to recommend (repeat or comma-separate)")
    ] = [],  # noqa: B006 - FastAPI copies defaults per request
) -> Response:
    if not claims.may_act_for(user_id):
        raise Forbidden
    recommendation = loaded.matrix.recommend(
        user_id, limit, loaded.strategy, _parse_exclude(exclude)
    )
    publish_in_background(
        request.app.state.broker, recommendation, loaded.titles, request.app.state.repeats
    )
    return json_response(
        {
            "user_id": user_id,
            "recommendations": [_pick(p, loaded.titles) for p in recommendation.picks],
            "strategy": recommendation.strategy,
            "generated_at": datetime.now(UTC),
        }
    )


@router.get(
    "/user/{user_id}/ratings",
    response_model=RatingsPage,
    summary="The ratings recom holds for one viewer",
    responses={**AUTH_RESPONSES, **FORBIDDEN, **LOADING},
)
async def get_user_ratings(
    user_id: uuid.UUID,
    claims: CurrentUser,
    loaded: LoadedDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response:
    if not claims.may_act_for(user_id):
        raise Forbidden
    ratings = loaded.matrix.user_ratings(user_id)
    window = ratings[(page - 1) * size : page * size]
    return json_response(
        {
            "user_id": user_id,
            "items": [
                {"movie_id": m, "title": loaded.titles.get(m), "score": s} for m, s in window
            ],
            "total": len(ratings),
            "page": page,
            "size": size,
        }
    )


@router.get(
    "/general",
    response_model=GeneralRead,
    summary="Popular, well-rated films (Bayesian average score)",
    responses=LOADING,
)
async def get_general(loaded: LoadedDep, limit: Limit = 10) -> Response:
    picks = loaded.matrix.general(limit, loaded.strategy)
    return json_response(
        {
            "recommendations": [_pick(p, loaded.titles) for p in picks],
            "strategy": STRATEGY_POPULAR,
            "generated_at": datetime.now(UTC),
        }
    )


@router.get(
    "/movies/{movie_id}/similar",
    response_model=SimilarMoviesRead,
    summary="Films liked by the same viewers (item-item cosine)",
    responses={
        404: {
            "description": "MOVIE_NOT_FOUND: neither rated nor in the catalogue, withdrawn, "
            "or not listed by a catalogue that lists films"
        },
        **LOADING,
    },
)
async def get_similar_movies(
    movie_id: uuid.UUID,
    loaded: LoadedDep,
    limit: Limit = 10,
) -> Response:
    if loaded.titles.hides(movie_id):
        # Withdrawn, or unknown to a catalogue that lists films: as absent as it is from picks.
        raise MovieNotFound
    similar = loaded.matrix.similar_movies(movie_id, limit, loaded.strategy)
    if similar is None:
        # A catalogue film no one has rated yet has no similar films, but it exists.
        if loaded.titles.get(movie_id) is None:
            raise MovieNotFound
        similar = []
    return json_response(
        {
            "movie_id": movie_id,
            "title": loaded.titles.get(movie_id),
            "similar": [
                {
                    "movie_id": s.movie_id,
                    "title": loaded.titles.get(s.movie_id),
                    "similarity": s.similarity,
                    "common_viewers": s.common_viewers,
                }
                for s in similar
            ],
        }
    )
