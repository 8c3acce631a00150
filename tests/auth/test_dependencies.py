"""A database or Redis outage makes auth answer 503 with Retry-After, never a 500 or a hang."""

from urllib.parse import urlsplit

import pytest

from fastapi_auth.config import Settings
from tests.auth.helpers import PASSWORD, StartAuth, new_email, register
from tests.support import DATABASE_OUTAGES, TcpProxy, database_outage

UNAVAILABLE = {"detail": "SERVICE_UNAVAILABLE"}


@pytest.mark.parametrize("kind", DATABASE_OUTAGES)
async def test_register_while_database_down_answers_503_then_recovers(
    start_auth: StartAuth, settings: Settings, kind: str
) -> None:
    async with database_outage(kind, settings.database_url) as outage:
        client = await start_auth(**outage.settings)
        await register(client)
        await outage.begin()

        down = await client.post(
            "/auth/v1/register", json={"email": new_email(), "password": PASSWORD}
        )

        assert (down.status_code, down.json()) == (503, UNAVAILABLE)
        assert down.headers["retry-after"] == "2"
        await outage.end()
        await register(client)


async def test_login_while_redis_down_answers_503(
    start_auth: StartAuth, settings: Settings
) -> None:
    redis_url = urlsplit(settings.redis_url)
    proxy = TcpProxy(redis_url.hostname or "127.0.0.1", redis_url.port or 6379)
    await proxy.start()
    try:
        proxied = redis_url._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        client = await start_auth(redis_url=proxied)
        email = new_email()
        await register(client, email)
        await proxy.cut()

        down = await client.post(
            "/auth/v1/jwt/login", data={"username": email, "password": PASSWORD}
        )

        assert (down.status_code, down.json()) == (503, UNAVAILABLE)
        assert down.headers["retry-after"] == "2"
    finally:
        await proxy.close()
