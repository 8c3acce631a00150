"""Request dependencies of the recommender: the loaded matrix, its store and the strategy."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fastapi_recom.errors import RecommenderLoading
from fastapi_recom.recommender import RatingMatrix, Strategy
from fastapi_recom.refresher import MatrixStore


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` one in a thread pool,
# which costs the hot path a thread hand-off per request.
async def get_store(request: Request) -> MatrixStore:
    return request.app.state.store


async def get_matrix(request: Request) -> RatingMatrix:
    matrix = request.app.state.store.matrix
    if matrix is None:
        raise RecommenderLoading
    return matrix


StoreDep = Annotated[MatrixStore, Depends(get_store)]
MatrixDep = Annotated[RatingMatrix, Depends(get_matrix)]


async def get_strategy(request: Request) -> Strategy:
    return request.app.state.strategy


StrategyDep = Annotated[Strategy, Depends(get_strategy)]
