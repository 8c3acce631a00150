"""Every service answers health, readiness, OpenAPI and Swagger UI under its gateway prefix."""

import importlib

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from tests.support import wait_for

SERVICES = [
    ("fastapi_auth", "auth"),
    ("fastapi_ugc", "ugc"),
    ("fastapi_recom", "recom"),
    ("fastapi_ws", "ws"),
    ("notifications_service", "notifications"),
]


@pytest.mark.parametrize(("package", "prefix"), SERVICES)
async def test_probes_and_docs_answer_under_prefix(package: str, prefix: str) -> None:
    app = importlib.import_module(f"{package}.main").app
    async with (
        LifespanManager(app, startup_timeout=30) as manager,
        AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://test") as client,
    ):
        health = await client.get(f"/{prefix}/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}

        async def ready() -> bool:
            return (await client.get(f"/{prefix}/ready")).status_code == 200

        await wait_for(ready, timeout=15)
        body = (await client.get(f"/{prefix}/ready")).json()
        assert body["status"] == "ok"
        assert {"redis", "broker"} <= set(body["checks"])

        spec = await client.get(f"/{prefix}/openapi.json")
        assert spec.status_code == 200
        assert spec.json()["info"]["title"] == package
        docs = await client.get(f"/{prefix}/openapi")
        assert docs.status_code == 200
        assert "swagger-ui" in docs.text

        metrics = await client.get(f"/{prefix}/metrics")
        assert metrics.status_code == 200
        assert "http_request_duration_seconds" in metrics.text
