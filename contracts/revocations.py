"""Token revocations: written once by fastapi_auth, mirrored in memory by the hot-path services.

A revocation is written in one MULTI as the two Redis keys every verifier can look up
(`contracts.tokens.REVOKED_JTI_KEY`, `REVOKED_BEFORE_KEY`) and as an entry of the stream
`auth:revocations`. A `RevocationMirror` reads the stream from its start, then blocks on it
(XREAD), so checking a token costs a dict look-up instead of a Redis round trip, and a
revocation reaches every replica as soon as Redis hands out the entry (about a millisecond).
While the mirror cannot read the stream (not loaded yet, Redis down) it is not `live`, and
the verifier looks the keys up on every request as before, answering 503 if Redis is down.

Entries older than the longest token lifetime plus a margin are trimmed from the stream: by
then every token they revoke has expired. The horizon is the same for every entry: trimming by
an entry's own lifetime (a logout of a token about to expire) would drop older revocations
still in force, and a mirror started later would never see them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import suppress
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from contracts.tokens import REVOKED_BEFORE_KEY, REVOKED_JTI_KEY, TokenClaims

logger = logging.getLogger(__name__)

REVOCATION_STREAM = "auth:revocations"
# Kept in the stream (and the cut-off key) this long after the tokens' lifetime.
REVOCATION_MARGIN_SECONDS = 60
# The longest access-token lifetime fastapi_auth accepts: stream entries are kept this long
# (plus the margin) whatever they revoke.
LONGEST_TOKEN_LIFETIME_SECONDS = 3600


async def record_revocation(
    redis: Redis,
    user_id: uuid.UUID,
    *,
    jti: str | None = None,
    not_before: float | None = None,
    keep_seconds: int,
) -> None:
    """Revoke one token (`jti`) or every token of the user issued before `not_before` (epoch
    seconds), for `keep_seconds` (the rest of the token's lifetime, or the longest lifetime)."""
    if (jti is None) == (not_before is None):
        raise ValueError("give exactly one of jti and not_before")
    ttl = keep_seconds + REVOCATION_MARGIN_SECONDS
    fields: dict[str, str] = {"user_id": str(user_id), "until": repr(time.time() + ttl)}
    async with redis.pipeline(transaction=True) as pipe:
        if jti is not None:
            pipe.set(REVOKED_JTI_KEY.format(jti=jti), "1", ex=ttl)
            fields["jti"] = jti
        else:
            pipe.set(REVOKED_BEFORE_KEY.format(user_id=user_id), repr(not_before), ex=ttl)
            fields["not_before"] = repr(not_before)
        # Stream ids are milliseconds: entries older than any live token's revocation go.
        horizon = max(ttl, LONGEST_TOKEN_LIFETIME_SECONDS + REVOCATION_MARGIN_SECONDS)
        oldest = int((time.time() - horizon) * 1000)
        pipe.xadd(REVOCATION_STREAM, fields, minid=oldest, approximate=True)  # type: ignore[arg-type]
        await pipe.execute()


class RevocationMirror:
    """The revocations of `auth:revocations`, kept current by a background XREAD loop."""

    def __init__(self, redis: Redis, *, block_ms: int = 1000, retry_seconds: float = 0.5) -> None:
        self._redis = redis
        self._block_ms = block_ms
        self._retry_seconds = retry_seconds
        self._last_id = "0-0"
        self._live = False
        # jti -> until; user -> (not_before, until): `until` is when the entry can be dropped.
        self._jtis: dict[str, float] = {}
        self._cutoffs: dict[uuid.UUID, tuple[float, float]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        """True while every revocation written so far is reflected (within a Redis round trip)."""
        return self._live

    def is_revoked(self, claims: TokenClaims) -> bool:
        if claims.jti in self._jtis:
            return True
        cutoff = self._cutoffs.get(claims.user_id)
        return cutoff is not None and claims.issued_at < cutoff[0]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="revocation-mirror")

    async def stop(self) -> None:
        self._live = False
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self) -> None:
        while True:
            try:
                # The first read takes everything already there without waiting; the mirror
                # is live once it has, and stays live while the blocking reads succeed.
                await self._read(block=None)
                self._live = True
                while True:
                    await self._read(block=self._block_ms)
            except (RedisError, OSError) as exc:
                if self._live:
                    logger.warning(
                        "revocation stream unreadable, checking Redis per request: %r", exc
                    )
                self._live = False
                await asyncio.sleep(self._retry_seconds)

    async def _read(self, *, block: int | None) -> None:
        reply = cast(
            "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None",
            await self._redis.xread({REVOCATION_STREAM: self._last_id}, block=block),
        )
        now = time.time()
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                self._apply(fields, now)
                self._last_id = entry_id.decode()
        self._prune(now)

    def _apply(self, fields: dict[bytes, bytes], now: float) -> None:
        values = {key.decode(): value.decode() for key, value in fields.items()}
        until = float(values["until"])
        if until <= now:
            return
        if "jti" in values:
            self._jtis[values["jti"]] = until
        else:
            user_id = uuid.UUID(values["user_id"])
            not_before = float(values["not_before"])
            current = self._cutoffs.get(user_id)
            if current is None or current[0] < not_before:
                self._cutoffs[user_id] = (not_before, until)

    def _prune(self, now: float) -> None:
        # Tokens these entries revoke have expired: they would refuse nothing any more.
        for jti in [jti for jti, until in self._jtis.items() if until <= now]:
            del self._jtis[jti]
        for user in [user for user, (_, until) in self._cutoffs.items() if until <= now]:
            del self._cutoffs[user]
