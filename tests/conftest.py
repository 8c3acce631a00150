"""Suite-wide set-up: the test environment (own databases, vhost, Redis db) and migrations once."""

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from scripts import bootstrap

if TYPE_CHECKING:
    from tests.support import TcpProxy

bootstrap.ensure_env_file()
_env = bootstrap.load_env()
# Set, not defaulted: a shell that exported the live RABBITMQ_URL or REDIS_URL (say, after
# sourcing .env) must not point the suite, which deletes its vhost at start, at them. Runs that
# share a machine choose their own with POSTGRES_DB_SUFFIX, TEST_RABBITMQ_URL, TEST_REDIS_URL.
os.environ.update(bootstrap.test_environment(_env))


def pytest_configure(config: object) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    env = bootstrap.load_env()
    bootstrap.check_dependencies(env)
    bootstrap.reset_vhost(env)
    bootstrap.ensure_vhost(env)
    bootstrap.ensure_databases(env)
    bootstrap.migrate(env)


@pytest.fixture
async def broker_proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator["TcpProxy"]:
    """Services started after this reach RabbitMQ through a TcpProxy the test can cut."""
    from urllib.parse import urlsplit

    # Imported here: they read the test environment set above.
    from tests.ratings_pipeline import RABBITMQ_URL, url_through
    from tests.support import TcpProxy

    target = urlsplit(RABBITMQ_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await proxy.start()
    monkeypatch.setenv("RABBITMQ_URL", url_through(RABBITMQ_URL, proxy.port))
    yield proxy
    await proxy.close()
