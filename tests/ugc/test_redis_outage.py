"""With Redis not answering UGC refuses a rating with 503 (no replica's own clock stands in for
Redis's), then recovers by itself."""

import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from httpx import AsyncClient

from fastapi_recom.consumers import RATINGS_QUEUE
from tests.ratings_pipeline import Rabbit, url_through
from tests.support import TcpProxy, bearer, make_token, wait_for

RATINGS = "/ugc/v1/ratings"


@pytest.fixture
async def redis_proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TcpProxy]:
    """UGC started after this reaches Redis through a TcpProxy the test can stall."""
    url = os.environ["REDIS_URL"]
    target = urlsplit(url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    monkeypatch.setenv("REDIS_URL", url_through(url, proxy.port))
    yield proxy
    proxy.release()
    await proxy.close()


async def test_rating_while_redis_does_not_answer_is_refused_with_503_then_accepted(
    redis_proxy: TcpProxy, client: AsyncClient, rabbit: Rabbit
) -> None:
    headers = bearer(make_token())
    movie_id = str(uuid.uuid4())
    # Redis's replies are held from now on. The revocation mirror's pending read has a second
    # or more before it times out, so the token is still checked from memory and only the
    # stamp waits on Redis (2 s socket timeout). The client's 15 s timeout turns a hang into
    # a failure.
    redis_proxy.hold()
    try:
        refused = await client.post(
            RATINGS, json={"movie_id": movie_id, "score": 4}, headers=headers
        )
    finally:
        redis_proxy.release()

    assert (refused.status_code, refused.json()) == (503, {"detail": "SERVICE_UNAVAILABLE"})
    assert refused.headers["Retry-After"] == "2"
    assert await rabbit.take_all(RATINGS_QUEUE) == []

    async def accepted() -> bool:
        response = await client.post(
            RATINGS, json={"movie_id": movie_id, "score": 4}, headers=headers
        )
        return response.status_code == 202

    await wait_for(accepted, timeout=20, interval=0.5)
    assert len(await rabbit.take_all(RATINGS_QUEUE)) == 1
