"""Failed-login throttling per account and per client address, in Redis, without lockout."""

from __future__ import annotations

import hashlib

from fastapi import HTTPException, status
from redis.asyncio import Redis

ACCOUNT_KEY = "auth:login:fail:account:{digest}"
ADDRESS_KEY = "auth:login:fail:ip:{address}"

LOGIN_THROTTLED = "LOGIN_THROTTLED"


class LoginThrottled(HTTPException):
    """429 with Retry-After: the counter that tripped expires then, so no lockout is permanent."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=LOGIN_THROTTLED,
            headers={"Retry-After": str(retry_after)},
        )


class LoginThrottle:
    """Fixed windows that open at the first failure: `limit` failures per `window` seconds.

    Unknown accounts are counted like known ones, so the answers reveal nothing.
    """

    def __init__(
        self, redis: Redis, *, per_account: int, per_address: int, window_seconds: int
    ) -> None:
        self._redis = redis
        self._per_account = per_account
        self._per_address = per_address
        self._window = window_seconds

    def _keys(self, email: str, address: str | None) -> list[tuple[str, int]]:
        # A digest keeps e-mail addresses out of Redis key names.
        digest = hashlib.sha256(email.strip().casefold().encode()).hexdigest()[:32]
        keys = [(ACCOUNT_KEY.format(digest=digest), self._per_account)]
        if address:
            keys.append((ADDRESS_KEY.format(address=address), self._per_address))
        return keys

    async def check(self, email: str, address: str | None) -> None:
        """Raise LoginThrottled while the account or the address is over its limit."""
        keys = self._keys(email, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, _ in keys:
                pipe.get(key)
                pipe.ttl(key)
            replies = await pipe.execute()
        waits = [
            max(int(ttl), 1)
            for (_, limit), count, ttl in zip(keys, replies[::2], replies[1::2], strict=True)
            if count is not None and int(count) >= limit
        ]
        if waits:
            raise LoginThrottled(max(waits))

    async def record_failure(self, email: str, address: str | None) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for key, _ in self._keys(email, address):
                pipe.incr(key)
                pipe.expire(key, self._window, nx=True)
            await pipe.execute()

    async def record_success(self, email: str) -> None:
        """The account's owner is back: forget its failures (the address keeps its count)."""
        await self._redis.delete(self._keys(email, None)[0][0])
