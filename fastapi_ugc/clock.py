"""The clock that orders a viewer's changes of a rating: Redis's, the one every replica shares."""

import uuid
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

CLOCK_KEY = "ugc:rating-clock:{user_id}:{movie_id}"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Microseconds since the epoch by Redis's TIME, or one past the last stamp of this (viewer,
# film) if TIME is not beyond it (a second change within the microsecond, Redis's clock
# stepped back): strictly increasing per pair whichever replica asks. The key expires at the
# stamp plus ARGV[1] ms by Redis's own clock, not that long after it was written, so it
# outlives any step back however large: once it has expired, TIME is past the last stamp.
# Numbers are formatted with %d: Lua would print a 16-digit one as 1.7e+15.
_NEXT_STAMP = """
local now = redis.call('TIME')
local stamp = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = tonumber(redis.call('GET', KEYS[1]))
if last and stamp <= last then
    stamp = last + 1
end
local expires_at = math.floor(stamp / 1000) + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', stamp), 'PXAT', string.format('%d', expires_at))
return stamp
"""


class RatingClock:
    """Stamps each accepted change of a viewer's rating of a film later than the one before."""

    def __init__(self, redis: Redis, *, keep_seconds: int) -> None:
        self._next_stamp = redis.register_script(_NEXT_STAMP)
        self._keep_ms = keep_seconds * 1000

    async def stamp(self, user_id: uuid.UUID, movie_id: uuid.UUID) -> datetime:
        """Raises RedisError when Redis cannot answer: no replica's own clock stands in."""
        micros = await self._next_stamp(
            keys=[CLOCK_KEY.format(user_id=user_id, movie_id=movie_id)], args=[self._keep_ms]
        )
        return EPOCH + timedelta(microseconds=int(micros))
