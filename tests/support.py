"""Test tools shared by the service suites: tokens, free ports, service processes, a TCP cut-off."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parents[1]


@lru_cache
def _private_key() -> Any:
    """The suite's signing key, read from .env and parsed once (parsing costs milliseconds)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from scripts.bootstrap import load_env

    pem = load_env()["JWT_PRIVATE_KEY"].replace("\\n", "\n")
    return load_pem_private_key(pem.encode(), password=None)


def make_token(
    user_id: uuid.UUID | None = None,
    *,
    email: str | None = None,
    superuser: bool = False,
    verified: bool = True,
    lifetime: timedelta = timedelta(minutes=15),
    issued_at: datetime | None = None,
    audience: str = "fastapi-users:auth",
    key: str | None = None,
    algorithm: str = "RS256",
    **extra: Any,
) -> str:
    """A token shaped like fastapi_auth's, signed with the suite's private key."""
    now = issued_at or datetime.now(UTC)
    payload = {
        "sub": str(user_id or uuid.uuid4()),
        "aud": audience,
        "iat": now.timestamp(),
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        "email": email,
        "is_superuser": superuser,
        "is_verified": verified,
        **extra,
    }
    return jwt.encode(payload, key or _private_key(), algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    state: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Poll until `condition()` is true; fail the test with a clear message otherwise, with
    what `state()` shows then (a rare failure in CI should say where things stood)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(interval)
    shown = f"; state: {await state()!r}" if state is not None else ""
    raise AssertionError(f"condition not met within {timeout} s{shown}")


class ServiceProcess:
    """One service run by uvicorn in a child process, as `make run` runs it."""

    def __init__(self, app: str, prefix: str, *, env: dict[str, str] | None = None) -> None:
        self.app = app
        self.prefix = prefix
        self.port = free_port()
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, ready_timeout: float = 30.0, wait_ready: bool = True) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                self.app,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
            ],
            cwd=ROOT,
            env=self.env,
        )
        path = "ready" if wait_ready else "health"
        last = "no answer"

        async def up() -> bool:
            nonlocal last
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.app} exited with {self.proc.returncode}")
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    response = await client.get(f"{self.url}/{self.prefix}/{path}")
            except httpx.HTTPError as exc:
                last = repr(exc)
                return False
            last = f"{response.status_code} {response.text[:300]}"
            return response.status_code == 200

        try:
            await wait_for(up, timeout=ready_timeout, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{self.app} not {path} on :{self.port}: {last}") from exc

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, unacked messages go back to the queue."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_nginx(env: dict[str, str], run_dir: Path) -> subprocess.Popen[bytes]:
    """The project's gateway as a local run renders it (`scripts.bootstrap.render_nginx`)."""
    from scripts import bootstrap

    conf = bootstrap.render_nginx(env, run_dir)
    return subprocess.Popen(
        ["nginx", "-p", str(conf.parent), "-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"],
    )


class TcpProxy:
    """A TCP relay to a real server that a test can cut and restore, to simulate an outage
    (a broker or database going away) without stopping the server other tests share."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        # Cleared by `hold`: what the server sends waits in the relay (a slow network).
        self._replies_flow = asyncio.Event()
        self._replies_flow.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._links.update({writer, up_writer})

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, flow: asyncio.Event | None
        ) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if flow is not None:
                        await flow.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(
            pipe(reader, up_writer, None), pipe(up_reader, writer, self._replies_flow)
        )
        self._links.difference_update({writer, up_writer})

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for link in list(self._links):
            link.transport.abort()
        self._links.clear()

    async def restore(self) -> None:
        await self.start()

    def hold(self) -> None:
        """Keep the server's replies in the relay until `release`; requests still go through."""
        self._replies_flow.clear()

    def release(self) -> None:
        self._replies_flow.set()

    async def close(self) -> None:
        await self.cut()


class RefusingRole:
    """A login role of the test's own, with `rights` on the tables of one database's `schema`,
    that PostgreSQL itself can be told to refuse: `refuse` ends its sessions (SQLSTATE 57P01 on
    a connection in use) and turns new ones away (53300, as a server out of connection slots
    does); `admit` lets it in again. Other tests, which connect as another role, go on as
    before. `url` is the database's URL as this role."""

    def __init__(self, database_url: str, *, schema: str = "public", rights: str = "ALL") -> None:
        self.name = f"cinema_role_{uuid.uuid4().hex[:8]}"
        self.url = make_url(database_url).set(username=self.name).render_as_string(False)
        self._admin = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self._grants = [
            f"GRANT USAGE ON SCHEMA {schema} TO {self.name}",
            f"GRANT {rights} ON ALL TABLES IN SCHEMA {schema} TO {self.name}",
        ]
        if rights != "SELECT":
            self._grants.append(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {self.name}")

    async def _run(self, *statements: str) -> None:
        connection = await asyncpg.connect(self._admin)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    async def __aenter__(self) -> RefusingRole:
        await self._run(f"CREATE ROLE {self.name} LOGIN NOSUPERUSER", *self._grants)
        return self

    async def refuse(self) -> None:
        await self._run(
            f"ALTER ROLE {self.name} CONNECTION LIMIT 0",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{self.name}'",
        )

    async def admit(self) -> None:
        await self._run(f"ALTER ROLE {self.name} CONNECTION LIMIT -1")

    async def __aexit__(self, *_: object) -> None:
        await self.refuse()
        await self._run(f"DROP OWNED BY {self.name}", f"DROP ROLE {self.name}")


@dataclass(frozen=True)
class DatabaseOutage:
    """A service's way to its database that a test can take away and give back; `settings`
    (field names) point the service at it."""

    settings: dict[str, str]
    begin: Callable[[], Awaitable[None]]
    end: Callable[[], Awaitable[None]]


DATABASE_OUTAGES = ["cut", "refused"]


@contextlib.asynccontextmanager
async def database_outage(kind: str, database_url: str) -> AsyncIterator[DatabaseOutage]:
    """`cut`: the connections drop and new ones fail, as in a network failure (SQLAlchemy's
    OperationalError). `refused`: PostgreSQL itself ends the sessions (57P01) and turns new
    ones away (53300), as when it restarts or runs out of connection slots; asyncpg raises
    that refusal unwrapped."""
    if kind == "refused":
        async with RefusingRole(database_url) as role:
            yield DatabaseOutage({"postgres_user": role.name}, role.refuse, role.admit)
        return
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    try:
        settings = {"postgres_host": "127.0.0.1", "postgres_port": str(proxy.port)}
        yield DatabaseOutage(settings, proxy.cut, proxy.restore)
    finally:
        await proxy.close()
