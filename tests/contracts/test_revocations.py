"""Revocations mirrored in memory (`contracts.revocations`) refuse what Redis refuses, at once."""

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from contracts.revocations import (
    LONGEST_TOKEN_LIFETIME_SECONDS,
    REVOCATION_STREAM,
    RevocationMirror,
    record_revocation,
)
from contracts.tokens import (
    REVOKED_BEFORE_KEY,
    REVOKED_JTI_KEY,
    RevocationUnavailable,
    TokenClaims,
    TokenRevoked,
    TokenVerifier,
)
from fastapi_auth.config import Settings
from tests.support import TcpProxy, make_token, wait_for


@pytest.fixture
async def mirror(redis: Redis) -> AsyncIterator[RevocationMirror]:
    mirror = RevocationMirror(redis, block_ms=200)
    mirror.start()
    await wait_for(lambda: _true(mirror.live), timeout=5)
    yield mirror
    await mirror.stop()


@pytest.fixture
def verifier(settings: Settings, redis: Redis, mirror: RevocationMirror) -> TokenVerifier:
    return TokenVerifier(settings.public_key_pem, settings.jwt_audience, redis, revocations=mirror)


async def _true(value: bool) -> bool:
    return value


def jti_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


async def forget_keys(redis: Redis, user_id: uuid.UUID, jti: str) -> None:
    """Drop the per-request keys, so that only the stream still knows the revocation."""
    await redis.delete(REVOKED_JTI_KEY.format(jti=jti), REVOKED_BEFORE_KEY.format(user_id=user_id))


async def test_record_writes_the_keys_and_a_stream_entry(redis: Redis) -> None:
    user_id, jti = uuid.uuid4(), uuid.uuid4().hex

    await record_revocation(redis, user_id, jti=jti, keep_seconds=30)

    assert await redis.get(REVOKED_JTI_KEY.format(jti=jti)) == b"1"
    assert 30 < await redis.ttl(REVOKED_JTI_KEY.format(jti=jti)) <= 90
    newest = await redis.xrevrange(REVOCATION_STREAM, count=1)
    assert newest
    _, fields = newest[0]
    assert fields is not None
    assert fields[b"jti"] == jti.encode()
    assert fields[b"user_id"] == str(user_id).encode()
    with pytest.raises(ValueError, match="exactly one"):
        await record_revocation(redis, user_id, keep_seconds=30)


async def test_live_mirror_refuses_a_revoked_token_without_redis_keys(
    redis: Redis, verifier: TokenVerifier
) -> None:
    user_id = uuid.uuid4()
    token, other = make_token(user_id), make_token(user_id)
    assert (await verifier.verify(token)).user_id == user_id

    await record_revocation(redis, user_id, jti=jti_of(token), keep_seconds=60)
    await forget_keys(redis, user_id, jti_of(token))

    async def refused() -> bool:
        try:
            await verifier.verify(token)
        except TokenRevoked:
            return True
        return False

    # The blocking read returns as soon as the entry is written.
    await wait_for(refused, timeout=1, interval=0.005)
    assert (await verifier.verify(other)).user_id == user_id


async def test_cutoff_refuses_only_tokens_issued_before_it(
    redis: Redis, mirror: RevocationMirror, verifier: TokenVerifier
) -> None:
    user_id = uuid.uuid4()
    cutoff = datetime.now(UTC)
    before = make_token(user_id, issued_at=cutoff - timedelta(microseconds=1))
    after = make_token(user_id, issued_at=cutoff + timedelta(microseconds=1))
    stranger = make_token(issued_at=cutoff - timedelta(seconds=1))

    await record_revocation(redis, user_id, not_before=cutoff.timestamp(), keep_seconds=60)
    await forget_keys(redis, user_id, "")
    await wait_for(lambda: _true(mirror.is_revoked(verifier.decode(before))), timeout=1)

    with pytest.raises(TokenRevoked):
        await verifier.verify(before)
    assert (await verifier.verify(after)).user_id == user_id
    await verifier.verify(stranger)


async def test_a_mirror_started_later_reads_earlier_revocations(redis: Redis) -> None:
    user_id, jti = uuid.uuid4(), uuid.uuid4().hex
    await record_revocation(redis, user_id, jti=jti, keep_seconds=60)
    # An entry whose tokens have all expired is skipped rather than kept forever.
    expired = uuid.uuid4().hex
    await redis.xadd(
        REVOCATION_STREAM,
        {"user_id": str(user_id), "jti": expired, "until": repr(time.time() - 1)},
    )

    late = RevocationMirror(redis, block_ms=200)
    late.start()
    try:
        await wait_for(lambda: _true(late.live), timeout=5)
        assert late.is_revoked(_claims(user_id, jti))
        assert not late.is_revoked(_claims(user_id, expired))
        assert not late.is_revoked(_claims(user_id, uuid.uuid4().hex))
    finally:
        await late.stop()


async def test_a_short_logout_later_trims_no_revocation_still_in_force(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A password reset cuts the viewer's tokens off for a whole token lifetime...
    user_id = uuid.uuid4()
    cutoff = time.time()
    await record_revocation(redis, user_id, not_before=cutoff, keep_seconds=900)
    # ...and others are revoked beside it, enough to fill the nodes Redis trims whole.
    for _ in range(250):
        await record_revocation(redis, uuid.uuid4(), jti=uuid.uuid4().hex, keep_seconds=900)
    # Two minutes on, someone logs out a token with 10 s left.
    later = cutoff + 120
    monkeypatch.setattr("contracts.revocations.time.time", lambda: later)
    await record_revocation(redis, uuid.uuid4(), jti=uuid.uuid4().hex, keep_seconds=10)
    monkeypatch.undo()

    # A process started now (a new replica, a restart) still learns the cut-off.
    late = RevocationMirror(redis, block_ms=200)
    late.start()
    try:
        await wait_for(lambda: _true(late.live), timeout=5)
        before = TokenClaims(
            user_id=user_id,
            jti=uuid.uuid4().hex,
            issued_at=cutoff - 1,
            expires_at=cutoff + 899,
            email=None,
            is_superuser=False,
            is_verified=True,
        )
        assert late.is_revoked(before)
    finally:
        await late.stop()


async def test_mirror_falls_back_to_redis_while_unreadable_and_catches_up(
    settings: Settings, redis: Redis
) -> None:
    host, port = "127.0.0.1", int(settings.redis_url.split(":")[2].split("/")[0])
    proxy = TcpProxy(host, port)
    await proxy.start()
    db = settings.redis_url.rsplit("/", 1)[1]
    relayed = Redis.from_url(
        f"redis://127.0.0.1:{proxy.port}/{db}", socket_timeout=2, socket_connect_timeout=2
    )
    mirror = RevocationMirror(relayed, block_ms=200, retry_seconds=0.1)
    verifier = TokenVerifier(
        settings.public_key_pem, settings.jwt_audience, relayed, revocations=mirror
    )
    mirror.start()
    user_id = uuid.uuid4()
    token = make_token(user_id)
    try:
        await wait_for(lambda: _true(mirror.live), timeout=5)
        await proxy.cut()
        await wait_for(lambda: _true(not mirror.live), timeout=5)
        # Not live: the verifier asks Redis, which is unreachable, so the answer is a 503.
        with pytest.raises(RevocationUnavailable):
            await verifier.verify(token)

        # Revoked while this process could not read the stream.
        await record_revocation(redis, user_id, jti=jti_of(token), keep_seconds=60)
        await forget_keys(redis, user_id, jti_of(token))
        await proxy.restore()
        await wait_for(lambda: _true(mirror.live), timeout=5)
        with pytest.raises(TokenRevoked):
            await verifier.verify(token)
    finally:
        await mirror.stop()
        await relayed.aclose()
        await proxy.close()


def _claims(user_id: uuid.UUID, jti: str) -> TokenClaims:
    now = time.time()
    return TokenClaims(
        user_id=user_id,
        jti=jti,
        issued_at=now,
        expires_at=now + 60,
        email=None,
        is_superuser=False,
        is_verified=True,
    )


def test_auth_refuses_tokens_longer_lived_than_the_stream_keeps_revocations() -> None:
    assert Settings(access_token_lifetime_seconds=LONGEST_TOKEN_LIFETIME_SECONDS)
    with pytest.raises(ValidationError, match="access_token_lifetime_seconds"):
        Settings(access_token_lifetime_seconds=LONGEST_TOKEN_LIFETIME_SECONDS + 1)
