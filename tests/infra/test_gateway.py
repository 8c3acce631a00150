"""The gateway as rendered for a local run, on the real nginx: what reaches a service."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.support import free_port, start_nginx, wait_for


@contextlib.asynccontextmanager
async def upstream() -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    """A stand-in service that records the headers of every request and answers 200."""
    seen: list[dict[str, str]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[1:]
                seen.append(
                    {
                        k.strip().lower(): v.strip()
                        for k, _, v in (x.partition(":") for x in lines if x)
                    }
                )
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield port, seen
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, auth_port: int) -> AsyncIterator[str]:
    """nginx with the project's template, auth routed to `auth_port`; yields its base URL."""
    port = free_port()
    nginx = start_nginx(
        {"GATEWAY_PORT": f"127.0.0.1:{port}", "AUTH_PORT": str(auth_port)}, tmp_path
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:

            async def up() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get("/auth/health")).status_code == 200
                return False

            await wait_for(up, timeout=10)
        yield base
    finally:
        nginx.terminate()
        nginx.wait(10)


async def test_metrics_are_served_to_the_gateways_own_machine_only(tmp_path: Path) -> None:
    async with upstream() as (auth_port, seen), gateway(tmp_path, auth_port) as base:
        async with httpx.AsyncClient(base_url=base) as local:
            allowed = await local.get("/auth/metrics")
        seen_before = len(seen)
        # Another address (127.0.0.2 is loopback too, but not the allowed 127.0.0.1).
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=base, transport=transport) as remote:
            refused = await remote.get("/auth/metrics")
            other = await remote.get("/auth/v1/users/me")
    assert allowed.status_code == 200
    assert (refused.status_code, refused.json()) == (403, {"detail": "FORBIDDEN"})
    assert "x-request-id" in refused.headers
    # The refused scrape never reached the service; other paths from that address do.
    assert len(seen) == seen_before + 1
    assert other.status_code == 200


async def test_a_clients_own_forwarded_for_header_does_not_reach_the_service(
    tmp_path: Path,
) -> None:
    """Services take the client's address from X-Forwarded-For (uvicorn --proxy-headers): the
    per-address login throttle keys on it, so a client must not be able to choose it."""
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}
    async with (
        upstream() as (auth_port, seen),
        gateway(tmp_path, auth_port) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        response = await client.get("/auth/v1/users/me", headers=spoofed)
    assert response.status_code == 200
    assert seen[-1]["x-forwarded-for"] == "127.0.0.1"
    assert seen[-1]["x-real-ip"] == "127.0.0.1"
    assert "203.0.113.9" not in str(seen[-1])
