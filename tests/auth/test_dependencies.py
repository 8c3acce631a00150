"""A database or Redis outage makes auth answer 503 with Retry-After, never a 500 or a hang."""

from urllib.parse import urlsplit

from fastapi_auth.config import Settings
from tests.auth.helpers import PASSWORD, StartAuth, new_email, register
from tests.support import RefusingRole, TcpProxy

UNAVAILABLE = {"detail": "SERVICE_UNAVAILABLE"}


async def test_register_while_database_down_answers_503_then_recovers(
    start_auth: StartAuth, settings: Settings
) -> None:
    proxy = TcpProxy(settings.postgres_host, settings.postgres_port)
    await proxy.start()
    try:
        client = await start_auth(postgres_port=proxy.port)
        await proxy.cut()

        down = await client.post(
            "/auth/v1/register", json={"email": new_email(), "password": PASSWORD}
        )

        assert (down.status_code, down.json()) == (503, UNAVAILABLE)
        assert down.headers["retry-after"] == "2"
        await proxy.restore()
        await register(client)
    finally:
        await proxy.close()


async def test_register_while_database_refuses_connections_answers_503_then_recovers(
    start_auth: StartAuth, settings: Settings
) -> None:
    # PostgreSQL's own refusal (out of slots, starting up, shutting down) reaches the app from
    # asyncpg unwrapped, not as SQLAlchemy's OperationalError that a cut connection raises.
    async with RefusingRole(settings.database_url) as role:
        client = await start_auth(postgres_user=role.name)
        await register(client)
        await role.refuse()

        down = await client.post(
            "/auth/v1/register", json={"email": new_email(), "password": PASSWORD}
        )

        assert (down.status_code, down.json()) == (503, UNAVAILABLE)
        assert down.headers["retry-after"] == "2"
        await role.admit()
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
