"""With RabbitMQ unreachable UGC answers 503 with Retry-After at once, and recovers by itself."""

import uuid

from httpx import AsyncClient

from fastapi_recom.consumers import RATINGS_QUEUE
from tests.ratings_pipeline import Rabbit
from tests.support import TcpProxy, bearer, make_token, wait_for


async def test_rating_while_broker_unreachable_answers_503_then_recovers(
    broker_proxy: TcpProxy, client: AsyncClient, rabbit: Rabbit
) -> None:
    headers = bearer(make_token())
    await broker_proxy.cut()

    async def broker_down() -> bool:
        return (await client.get("/ugc/ready")).status_code == 503

    await wait_for(broker_down, timeout=10)
    # The client's 15 s timeout turns a hang into a failure; publish_timeout is 3 s.
    refused = await client.post(
        "/ugc/v1/ratings", json={"movie_id": str(uuid.uuid4()), "score": 4}, headers=headers
    )

    assert (refused.status_code, refused.json()) == (503, {"detail": "BROKER_UNAVAILABLE"})
    assert refused.headers["Retry-After"] == "2"

    await broker_proxy.restore()
    movie_id = uuid.uuid4()

    async def accepted() -> bool:
        response = await client.post(
            "/ugc/v1/ratings", json={"movie_id": str(movie_id), "score": 4}, headers=headers
        )
        return response.status_code == 202

    await wait_for(accepted, timeout=20, interval=0.5)
    published = await rabbit.take_all(RATINGS_QUEUE)
    assert published
    assert all(str(movie_id).encode() in message.body for message in published)
