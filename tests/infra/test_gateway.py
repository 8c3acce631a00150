"""The gateway as rendered for a local run, on the real nginx: what reaches a service."""

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from scripts import bootstrap
from tests.support import free_port, wait_for


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


async def test_a_clients_own_forwarded_for_header_does_not_reach_the_service(
    tmp_path: Path,
) -> None:
    """Services take the client's address from X-Forwarded-For (uvicorn --proxy-headers): the
    per-address login throttle keys on it, so a client must not be able to choose it."""
    gateway = free_port()
    async with upstream() as (auth_port, seen):
        conf = bootstrap.render_nginx(
            {"GATEWAY_PORT": f"127.0.0.1:{gateway}", "AUTH_PORT": str(auth_port)}, tmp_path
        )
        nginx = subprocess.Popen(
            [
                "nginx",
                "-p",
                str(conf.parent),
                "-c",
                "nginx.conf",
                "-e",
                "stderr",
                "-g",
                "daemon off;",
            ]
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway}") as client:

                async def up() -> bool:
                    with contextlib.suppress(httpx.TransportError):
                        return (await client.get("/auth/health")).status_code == 200
                    return False

                await wait_for(up, timeout=10)
                spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}
                response = await client.get("/auth/v1/users/me", headers=spoofed)
        finally:
            nginx.terminate()
            nginx.wait(10)
    assert response.status_code == 200
    assert seen[-1]["x-forwarded-for"] == "127.0.0.1"
    assert seen[-1]["x-real-ip"] == "127.0.0.1"
    assert "203.0.113.9" not in str(seen[-1])
