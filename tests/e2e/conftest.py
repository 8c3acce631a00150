"""The whole suite as `make run` starts it (five uvicorn processes, nginx, an SMTP peer),
with PostgreSQL and RabbitMQ reached through relays that a test can cut to simulate an outage."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
import pytest
import redis
from aiosmtpd.controller import Controller

from scripts import bootstrap
from tests.support import ServiceProcess, TcpProxy, free_port, start_nginx, wait_for

APPS = {
    "auth": "fastapi_auth.main:app",
    "ugc": "fastapi_ugc.main:app",
    "recom": "fastapi_recom.main:app",
    "ws": "fastapi_ws.main:app",
    "notifications": "notifications_service.main:app",
}
# The suite gets databases, a vhost and a Redis db of its own: nothing the other tests left
# in their queues reaches it.
E2E_SUFFIX = "_e2e"
E2E_VHOST = "cinema_e2e"
E2E_REDIS = "redis://127.0.0.1:6379/9"


class MailSink:
    """An SMTP server that keeps what it accepts."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if address in (m.get("To") or "")]

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


class ThreadedProxy:
    """A TcpProxy on a loop of its own, so it relays while the test loop is idle."""

    def __init__(self, host: str, port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = TcpProxy(host, port)
        self._call(self.proxy.start())

    def _call(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    @property
    def port(self) -> int:
        return self.proxy.port

    def cut(self) -> None:
        self._call(self.proxy.cut())

    def restore(self) -> None:
        self._call(self.proxy.restore())

    def close(self) -> None:
        self._call(self.proxy.close())
        self._loop.call_soon_threadsafe(self._loop.stop)


@dataclass
class Suite:
    gateway: str
    env: dict[str, str]
    mail: MailSink
    postgres: ThreadedProxy
    rabbitmq: ThreadedProxy
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.gateway, timeout=15, **kwargs)


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    base = bootstrap.load_env()
    rabbit = bootstrap.urlsplit(os.environ["RABBITMQ_URL"])
    direct = {
        "POSTGRES_DB_SUFFIX": E2E_SUFFIX,
        "RABBITMQ_URL": rabbit._replace(path=f"/{E2E_VHOST}").geturl(),
        "REDIS_URL": E2E_REDIS,
    }
    # A clean start: nothing from an earlier run (users, passwords, queued events) leaks in.
    bootstrap.drop_databases({**base, **direct})
    bootstrap.reset_vhost({**base, **direct})
    redis.Redis.from_url(E2E_REDIS).flushdb()
    bootstrap.ensure_vhost({**base, **direct})
    bootstrap.ensure_databases({**base, **direct})
    bootstrap.migrate({**os.environ, **direct})

    postgres = ThreadedProxy(
        base.get("POSTGRES_HOST", "127.0.0.1"), int(base.get("POSTGRES_PORT", 5432))
    )
    rabbitmq = ThreadedProxy(rabbit.hostname or "127.0.0.1", rabbit.port or 5672)
    mail = MailSink()
    mail.start()
    gateway_port = free_port()
    gateway = f"http://127.0.0.1:{gateway_port}"
    netloc = rabbit.netloc.replace(f":{rabbit.port or 5672}", "")
    env = {
        **direct,
        "ENVIRONMENT": "test",
        "POSTGRES_PORT": str(postgres.port),
        "RABBITMQ_URL": rabbit._replace(
            netloc=f"{netloc}:{rabbitmq.port}", path=f"/{E2E_VHOST}"
        ).geturl(),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mail.port),
        "PUBLIC_BASE_URL": gateway,
        "ALLOWED_ORIGINS": f"{gateway},http://localhost:{gateway_port}",
        "GATEWAY_PORT": str(gateway_port),
        # The catalogue flows from the content database through the real ETL.
        "ETL_ENABLED": "true",
        "ETL_INTERVAL": "1",
        # Every request publishes its picks, so the story can ask for them again.
        "RECOM_PUBLISH_REPEAT_SECONDS": "0",
    }
    processes = {name: ServiceProcess(app, name, env=env) for name, app in APPS.items()}
    env.update({f"{name.upper()}_PORT": str(p.port) for name, p in processes.items()})
    s = Suite(
        gateway=gateway,
        env=env,
        mail=mail,
        postgres=postgres,
        rabbitmq=rabbitmq,
        processes=processes,
    )
    nginx: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(_start_all(processes))
        nginx = start_nginx(env, tmp_path_factory.mktemp("gateway"))
        asyncio.run(_wait_gateway(gateway))
        yield s
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        for process in processes.values():
            process.stop()
        mail.stop()
        postgres.close()
        rabbitmq.close()


async def _start_all(processes: dict[str, ServiceProcess]) -> None:
    await asyncio.gather(*(p.start(ready_timeout=120) for p in processes.values()))


async def _wait_gateway(gateway: str) -> None:
    async def up() -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(f"{gateway}/auth/health")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(up, timeout=15)
