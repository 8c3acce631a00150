"""Failed-login throttling per account and per client address, in Redis, without lockout."""

from __future__ import annotations

import hashlib

from fastapi import HTTPException, status
from redis.asyncio import Redis

ACCOUNT_KEY = "auth:login:fail:account:{digest}"
ACCOUNT_ADDRESS_KEY = "auth:login:fail:account:{digest}:ip:{address}"
ADDRESS_KEY = "auth:login:fail:ip:{address}"
KNOWN_ADDRESS_KEY = "auth:login:known:{digest}:ip:{address}"

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

    - An account takes `per_account` failures from all addresses together, which stops
      guessing spread over many addresses;
    - an address takes `per_address` failures over all accounts, which stops spraying;
    - an address the account's owner signed in from in the last `known_seconds` is not held
      by the account's count, only by its own count of failures on that account (also
      `per_account`). Without it, anyone who knows an e-mail address could keep its owner
      signed out by failing ten times every window.

    Unknown accounts are counted like known ones, so the answers reveal nothing.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        per_account: int,
        per_address: int,
        window_seconds: int,
        known_seconds: int,
    ) -> None:
        self._redis = redis
        self._per_account = per_account
        self._per_address = per_address
        self._window = window_seconds
        self._known = known_seconds

    @staticmethod
    def _digest(email: str) -> str:
        # A digest keeps e-mail addresses out of Redis key names.
        return hashlib.sha256(email.strip().casefold().encode()).hexdigest()[:32]

    def _keys(self, digest: str, address: str | None) -> list[tuple[str, int]]:
        keys = [(ACCOUNT_KEY.format(digest=digest), self._per_account)]
        if address:
            keys.append((ADDRESS_KEY.format(address=address), self._per_address))
            keys.append(
                (ACCOUNT_ADDRESS_KEY.format(digest=digest, address=address), self._per_account)
            )
        return keys

    async def check(self, email: str, address: str | None) -> None:
        """Raise LoginThrottled while a counter that holds this attempt is over its limit."""
        digest = self._digest(email)
        keys = self._keys(digest, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, _ in keys:
                pipe.get(key)
                pipe.ttl(key)
            if address:
                pipe.exists(KNOWN_ADDRESS_KEY.format(digest=digest, address=address))
            replies = await pipe.execute()
        if address and replies.pop():  # the owner's address: not held by the account's count
            keys, replies = keys[1:], replies[2:]
        waits = [
            max(int(ttl), 1)
            for (_, limit), count, ttl in zip(keys, replies[::2], replies[1::2], strict=True)
            if count is not None and int(count) >= limit
        ]
        if waits:
            raise LoginThrottled(max(waits))

    async def record_failure(self, email: str, address: str | None) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for key, _ in self._keys(self._digest(email), address):
                pipe.incr(key)
                pipe.expire(key, self._window, nx=True)
            await pipe.execute()

    async def record_success(self, email: str, address: str | None) -> None:
        """The account's owner is back: forget the account's failures (the address keeps its
        count over all accounts), and remember the address as the owner's."""
        digest = self._digest(email)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(ACCOUNT_KEY.format(digest=digest))
            if address:
                pipe.delete(ACCOUNT_ADDRESS_KEY.format(digest=digest, address=address))
                pipe.set(
                    KNOWN_ADDRESS_KEY.format(digest=digest, address=address), 1, ex=self._known
                )
            await pipe.execute()
