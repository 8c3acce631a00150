"""Pages of the cinema's front end (ALLOWED_ORIGINS) may call every service across origins."""

from collections.abc import AsyncIterator

import pytest
from fastapi import Header
from httpx import ASGITransport, AsyncClient

from contracts.app import create_app

FRONT_END = "https://www.cinema.example"
FOREIGN = "https://evil.example"


@pytest.fixture
async def client() -> AsyncIterator[AsyncClient]:
    app = create_app(title="t", prefix="t", origins=[FRONT_END])

    @app.post("/t/v1/things", status_code=202)
    async def things(authorization: str = Header()) -> dict[str, str]:
        return {"seen": authorization}

    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
        yield client


def preflight(origin: str, headers: str = "authorization,content-type,idempotency-key") -> dict:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers,
    }


async def test_the_front_end_preflight_is_answered_with_what_it_may_send(
    client: AsyncClient,
) -> None:
    answer = await client.options("/t/v1/things", headers=preflight(FRONT_END))
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == FRONT_END
    assert "POST" in answer.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "x-request-id"} <= allowed
    assert answer.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in answer.headers


async def test_a_foreign_page_is_refused_at_the_preflight(client: AsyncClient) -> None:
    answer = await client.options("/t/v1/things", headers=preflight(FOREIGN))
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers


async def test_a_header_outside_the_list_is_refused_at_the_preflight(client: AsyncClient) -> None:
    answer = await client.options("/t/v1/things", headers=preflight(FRONT_END, "x-sneaky"))
    assert answer.status_code == 400


async def test_the_front_end_reads_the_answer_and_a_foreign_page_cannot(
    client: AsyncClient,
) -> None:
    ours = await client.post(
        "/t/v1/things", headers={"Origin": FRONT_END, "Authorization": "Bearer x"}
    )
    assert ours.status_code == 202
    assert ours.json() == {"seen": "Bearer x"}
    assert ours.headers["access-control-allow-origin"] == FRONT_END
    exposed = {h.strip().lower() for h in ours.headers["access-control-expose-headers"].split(",")}
    assert exposed == {"retry-after", "x-request-id"}
    theirs = await client.post(
        "/t/v1/things", headers={"Origin": FOREIGN, "Authorization": "Bearer x"}
    )
    # The request itself is served (CORS is the browser's rule), but without the header the
    # browser withholds the answer from the foreign page.
    assert "access-control-allow-origin" not in theirs.headers


async def test_no_origins_means_no_cross_origin_answers() -> None:
    app = create_app(title="t", prefix="t", origins=[])
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
        answer = await client.options("/t/health", headers=preflight(FRONT_END))
    assert "access-control-allow-origin" not in answer.headers
