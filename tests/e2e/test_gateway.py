"""The gateway routes every prefix, passes request ids, and serves every Swagger UI."""

import uuid

import pytest

from tests.e2e.conftest import APPS, Suite

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("prefix", list(APPS))
async def test_swagger_ui_and_probes_reachable_through_gateway(suite: Suite, prefix: str) -> None:
    async with suite.client() as client:
        docs = await client.get(f"/{prefix}/openapi")
        assert docs.status_code == 200
        assert "swagger-ui" in docs.text
        # The UI fetches the spec from the same prefix, so it must be routed too.
        spec = await client.get(f"/{prefix}/openapi.json")
        assert spec.status_code == 200
        assert spec.json()["openapi"].startswith("3.")
        ready = await client.get(f"/{prefix}/ready")
        assert ready.status_code == 200, ready.text


async def test_request_id_passed_through_or_generated(suite: Suite) -> None:
    async with suite.client() as client:
        given = str(uuid.uuid4())
        echoed = await client.get("/auth/health", headers={"X-Request-Id": given})
        assert echoed.headers["X-Request-Id"] == given
        generated = await client.get("/auth/health")
        assert len(generated.headers["X-Request-Id"]) == 32


async def test_cross_origin_preflight_passes_the_gateway_for_allowed_origins_only(
    suite: Suite,
) -> None:
    """The suite's ALLOWED_ORIGINS holds the gateway's own origin; nginx must pass OPTIONS on."""
    ask = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    async with suite.client() as client:
        ours = await client.options(
            f"/recom/v1/user/{uuid.uuid4()}", headers={"Origin": suite.gateway, **ask}
        )
        theirs = await client.options(
            "/ugc/v1/ratings", headers={"Origin": "https://evil.example", **ask}
        )
    assert ours.status_code == 200, ours.text
    assert ours.headers["access-control-allow-origin"] == suite.gateway
    assert theirs.status_code == 400
    assert "access-control-allow-origin" not in theirs.headers
