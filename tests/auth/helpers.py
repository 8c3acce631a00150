"""Small tools of the auth suite: users, logins, an event tap, and a consumer of the shared check."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aio_pika
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.app import create_app
from contracts.broker import EVENTS_EXCHANGE
from contracts.tokens import CurrentUser, SuperUser, TokenVerifier
from fastapi_auth.config import get_settings
from fastapi_auth.main import app as auth_app
from fastapi_auth.models import OutboxEvent, User
from tests.support import bearer, wait_for

PASSWORD = "sunlit-otter-harbour-42"

StartAuth = Callable[..., Awaitable[AsyncClient]]


def new_email() -> str:
    return f"viewer-{uuid.uuid4().hex[:12]}@example.com"


async def register(
    client: AsyncClient,
    email: str | None = None,
    password: str = PASSWORD,
    full_name: str = "Test Viewer",
) -> dict[str, Any]:
    response = await client.post(
        "/auth/v1/register",
        json={"email": email or new_email(), "password": password, "full_name": full_name},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(client: AsyncClient, email: str, password: str = PASSWORD) -> str:
    response = await client.post(
        "/auth/v1/jwt/login", data={"username": email, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def create_superuser(client: AsyncClient, sessions: async_sessionmaker[AsyncSession]) -> str:
    """A registered user promoted in the database; returns its token."""
    email = new_email()
    user = await register(client, email)
    async with sessions() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(user["id"])).values(is_superuser=True)
        )
        await session.commit()
    return await login(client, email)


def code_of(confirm_url: str) -> str:
    return confirm_url.rsplit("/s/", 1)[1]


def foreign_private_key() -> str:
    """An RSA key that is not the suite's: what a forger would sign with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass
class EventTap:
    """An exclusive queue bound to `auth.#` on the suite's vhost, recording what arrives."""

    url: str
    received: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)
    connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self) -> None:
        self.connection = await aio_pika.connect_robust(self.url)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(
            EVENTS_EXCHANGE.name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="auth.#")
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.received.append(
            (message.routing_key or "", json.loads(message.body), message.message_id)
        )

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()

    def matching(self, routing_key: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            body
            for key, body, _ in self.received
            if key == routing_key and all(body.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(
        self, routing_key: str, timeout: float = 10.0, **fields: Any
    ) -> dict[str, Any]:
        async def arrived() -> bool:
            return bool(self.matching(routing_key, **fields))

        await wait_for(arrived, timeout=timeout)
        return self.matching(routing_key, **fields)[0]

    async def confirm_code(self, user_id: str) -> str:
        """The code of the short link sent to this user on sign-up."""
        registered = await self.wait_for("auth.user.registered", user_id=user_id)
        return code_of(registered["confirm_url"])


def reset_token_of(reset_url: str) -> str:
    """The token of a password-reset link (it travels in the fragment)."""
    return parse_qs(urlsplit(reset_url).fragment)["token"][0]


async def outbox_count(
    sessions: async_sessionmaker[AsyncSession], routing_key: str, **payload: str
) -> int:
    """Rows written to the outbox for this event whose payload has these values."""
    query = (
        select(func.count())
        .select_from(OutboxEvent)
        .where(
            OutboxEvent.routing_key == routing_key,
            *(OutboxEvent.payload[k].astext == v for k, v in payload.items()),
        )
    )
    async with sessions() as session:
        return int(await session.scalar(query) or 0)


def protected_app(public_key_pem: str, redis: Redis) -> FastAPI:
    """A service like ugc or recom: one route behind the shared `contracts.tokens` check."""
    app = create_app(title="protected", prefix="protected")
    app.state.token_verifier = TokenVerifier(public_key_pem, "fastapi-users:auth", redis)

    @app.get("/protected/whoami")
    async def whoami(user: CurrentUser) -> dict[str, Any]:
        return {"user_id": str(user.user_id), "jti": user.jti, "is_superuser": user.is_superuser}

    @app.get("/protected/admin")
    async def admin(user: SuperUser) -> dict[str, Any]:
        return {"user_id": str(user.user_id)}

    return app


def client_of(app: FastAPI, address: str = "127.0.0.1") -> AsyncClient:
    return AsyncClient(
        transport=ASGITransport(app=app, client=(address, 40000)), base_url="http://test"
    )


@asynccontextmanager
async def running_auth(
    monkeypatch: pytest.MonkeyPatch, client_address: str = "127.0.0.1", **env: Any
) -> AsyncIterator[AsyncClient]:
    """fastapi_auth in process, lifespan and all, with settings overridden by `env`."""
    # No first superuser unless a test asks: the one in .env belongs to the local run.
    monkeypatch.setenv("FIRST_SUPERUSER_EMAIL", "")
    for name, value in env.items():
        monkeypatch.setenv(name.upper(), str(value))
    get_settings.cache_clear()
    try:
        async with (
            LifespanManager(auth_app, startup_timeout=30),
            client_of(auth_app, client_address) as client,
        ):

            async def ready() -> bool:
                return (await client.get("/auth/ready")).status_code == 200

            await wait_for(ready, timeout=20)
            yield client
    finally:
        get_settings.cache_clear()


async def whoami(client: AsyncClient, token: str) -> tuple[int, Any]:
    response = await client.get("/protected/whoami", headers=bearer(token))
    return response.status_code, response.json()
