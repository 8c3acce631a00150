"""Database errors a request can meet: unavailable is 503, unstorable input 422, a bug 500."""

from collections.abc import AsyncIterator

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.app import create_app
from fastapi_recom.config import Settings
from tests.support import RefusingRole


@pytest.fixture
async def client() -> AsyncIterator[AsyncClient]:
    settings = Settings()
    async with RefusingRole(settings.database_url) as role:
        app = create_app(title="t", prefix="t")
        engines = {
            "owner": create_async_engine(settings.database_url),
            "refused": create_async_engine(role.url),
        }

        @app.get("/t/echo")
        async def echo(value: str, sql: str = "SELECT CAST(:value AS jsonb)", as_: str = "owner"):
            async with engines[as_].connect() as connection:
                return {"got": (await connection.execute(text(sql), {"value": value})).scalar()}

        await role.refuse()
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://t") as client:
            yield client
        for engine in engines.values():
            await engine.dispose()


async def test_a_value_the_database_cannot_hold_is_a_422(client: AsyncClient) -> None:
    answer = await client.get("/t/echo", params={"value": '"a\\u0000b"'})

    assert answer.status_code == 422
    assert answer.json()["detail"] == "VALIDATION_ERROR"
    assert answer.json()["errors"][0]["type"] == "value_not_storable"
    assert (await client.get("/t/echo", params={"value": '"ab"'})).json() == {"got": "ab"}


async def test_a_refused_connection_is_a_503(client: AsyncClient) -> None:
    answer = await client.get("/t/echo", params={"value": "1", "as_": "refused"})

    assert (answer.status_code, answer.json()) == (503, {"detail": "SERVICE_UNAVAILABLE"})
    assert answer.headers["retry-after"] == "2"


async def test_any_other_database_error_stays_a_500(client: AsyncClient) -> None:
    answer = await client.get("/t/echo", params={"value": "1", "sql": "SELECT * FROM nowhere"})

    assert answer.status_code == 500
