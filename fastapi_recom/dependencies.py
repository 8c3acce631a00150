"""Request dependencies of the recommender: the loaded matrix, and a short-lived token cache."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from contracts.tokens import TokenClaims, TokenRevoked, TokenVerifier
from fastapi_recom.errors import RecommenderLoading
from fastapi_recom.recommender import RatingMatrix, Strategy
from fastapi_recom.refresher import MatrixStore

# Bounds the cache; an attacker replaying many tokens just clears it more often.
_MAX_CACHED = 10_000


class CachedTokenVerifier(TokenVerifier):
    """Skips the signature check and the Redis look-up for a token verified `ttl` seconds ago.

    Revocation is therefore honoured within `ttl` (0.5 s by default) plus one Redis round
    trip, instead of at once; expiry is still checked on every request.
    """

    def __init__(self, public_key_pem: str, audience: str, redis: Redis, ttl: float) -> None:
        super().__init__(public_key_pem, audience, redis)
        self._ttl = ttl
        self._cache: dict[str, tuple[TokenClaims, float]] = {}

    async def verify(self, token: str) -> TokenClaims:
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and now - hit[1] < self._ttl and hit[0].expires_at > time.time():
            return hit[0]
        claims = self.decode(token)
        if await self.is_revoked(claims):
            self._cache.pop(token, None)
            raise TokenRevoked
        if self._ttl > 0:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[token] = (claims, now)
        return claims


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
