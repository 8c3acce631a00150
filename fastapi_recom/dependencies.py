"""Request dependencies of the recommender: what a request reads, handed out in one piece."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from fastapi_recom.errors import RecommenderLoading
from fastapi_recom.recommender import RatingMatrix, Strategy, TitleCache


@dataclass(frozen=True, slots=True)
class Loaded:
    """The matrix as it is now (the refresher swaps it), the film titles and the strategy."""

    matrix: RatingMatrix
    titles: TitleCache
    strategy: Strategy


# One dependency rather than three: each costs the hot path its own resolution step. It is
# `async def` on purpose: FastAPI runs a plain `def` dependency in a thread pool.
async def get_loaded(request: Request) -> Loaded:
    store = request.app.state.store
    matrix = store.matrix
    if matrix is None:
        raise RecommenderLoading
    return Loaded(matrix, store.titles, request.app.state.strategy)


LoadedDep = Annotated[Loaded, Depends(get_loaded)]
