"""Request metrics: one series per method, route and status, whatever a client sends."""

from httpx import ASGITransport, AsyncClient
from prometheus_client import REGISTRY

from contracts.app import create_app


def methods_seen(service: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if (
                sample.name == "http_request_duration_seconds_count"
                and sample.labels["service"] == service
            ):
                method = sample.labels["method"]
                counts[method] = counts.get(method, 0) + sample.value
    return counts


async def test_unknown_methods_share_one_series_instead_of_adding_one_each() -> None:
    app = create_app(title="m", prefix="metrics-probe")
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://m") as client:
        for method in ("AAAA", "AAAB", "PROPFIND", "BREW"):
            answer = await client.request(method, "/metrics-probe/health")
            assert answer.status_code == 405
        assert (await client.get("/metrics-probe/health")).status_code == 200
        assert (await client.delete("/metrics-probe/health")).status_code == 405

    assert methods_seen("metrics-probe") == {"OTHER": 4, "GET": 1, "DELETE": 1}
