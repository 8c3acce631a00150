"""Suite-wide set-up: the test environment (own databases, vhost, Redis db) and migrations once."""

import os

from scripts import bootstrap

bootstrap.ensure_env_file()
_env = bootstrap.load_env()
for _name, _value in bootstrap.test_environment(_env).items():
    os.environ.setdefault(_name, _value)


def pytest_configure(config: object) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    env = bootstrap.load_env()
    bootstrap.check_dependencies(env)
    bootstrap.reset_vhost(env)
    bootstrap.ensure_vhost(env)
    bootstrap.ensure_databases(env)
    bootstrap.migrate(env)
