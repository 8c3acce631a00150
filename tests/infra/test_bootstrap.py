"""The set-up step of `make run` and `make test`: fresh secrets, clear refusals, the honcho env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scripts import bootstrap
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


def parse_env(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[name] = value
    return values


def test_fill_placeholders_writes_rs256_pair_and_fresh_secrets() -> None:
    example = (ROOT / ".env.example").read_text()
    filled = bootstrap.fill_placeholders(example)
    values = parse_env(filled)

    assert bootstrap.PLACEHOLDER not in values.values()
    assert not bootstrap.has_placeholders(filled)
    assert bootstrap.has_placeholders(example)
    assert values.keys() == parse_env(example).keys()
    private_pem = values["JWT_PRIVATE_KEY"]
    public_pem = values["JWT_PUBLIC_KEY"]
    assert "\n" not in private_pem
    assert private_pem.startswith("-----BEGIN PRIVATE KEY-----\\n")
    private = serialization.load_pem_private_key(
        private_pem.replace("\\n", "\n").encode(), password=None
    )
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    token = jwt.encode({"sub": "42", "aud": "fastapi-users:auth"}, private, algorithm="RS256")
    claims = jwt.decode(
        token,
        public_pem.replace("\\n", "\n"),
        algorithms=["RS256"],
        audience="fastapi-users:auth",
    )
    assert claims == {"sub": "42", "aud": "fastapi-users:auth"}

    secrets = [values[name] for name in ("POSTGRES_PASSWORD", "SECRET_KEY", "UNSUBSCRIBE_SECRET")]
    assert len(set(secrets)) == 3
    assert all(len(secret) >= 40 for secret in secrets)
    assert values["POSTGRES_USER"] == "postgres"


def test_fill_placeholders_makes_a_new_pair_each_time() -> None:
    example = (ROOT / ".env.example").read_text()
    first = parse_env(bootstrap.fill_placeholders(example))
    second = parse_env(bootstrap.fill_placeholders(example))
    assert first["JWT_PRIVATE_KEY"] != second["JWT_PRIVATE_KEY"]
    assert first["SECRET_KEY"] != second["SECRET_KEY"]


def test_run_exits_naming_the_service_and_start_command_when_its_port_is_closed() -> None:
    closed = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "scripts.bootstrap", "run"],
        cwd=ROOT,
        env={**os.environ, "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(closed)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"PostgreSQL is not reachable at 127.0.0.1:{closed}" in result.stderr
    assert bootstrap.HOW_TO_START["PostgreSQL"] in result.stderr
    assert "ERROR: PostgreSQL not reachable; start it and run the command again." in result.stderr
    assert "RabbitMQ" not in result.stderr
    assert "Traceback" not in result.stderr
    assert "Cinema recommendations suite" not in result.stdout


def test_procfile_env_keeps_settings_keys_intact_under_honcho(tmp_path: Path) -> None:
    env = {**bootstrap.load_env(), "AUTH_PORT": "18001", "SMTP_PORT": "11025"}
    procfile_env = bootstrap.write_procfile_env(env, tmp_path)
    assert "AUTH_PORT=18001\n" in procfile_env.read_text()
    assert "SMTP_PORT=11025\n" in procfile_env.read_text()
    assert "JWT" not in procfile_env.read_text()
    probe = (
        "import os; from fastapi_auth.config import Settings; "
        "from cryptography.hazmat.primitives import serialization as s; "
        "s.load_pem_public_key(Settings().public_key_pem.encode()); "
        "print(os.environ['AUTH_PORT'], 'key ok')"
    )
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "honcho"),
            "-e",
            str(procfile_env),
            "run",
            sys.executable,
            "-c",
            probe,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "18001 key ok"


def test_the_suite_never_takes_an_exported_live_broker_or_redis() -> None:
    """tests/conftest.py deletes its vhost at start: a shell that exported the live
    RABBITMQ_URL (say, after sourcing .env) must still run the suite on its own vhost."""
    env = {
        **os.environ,
        "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672/cinema",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "ENVIRONMENT": "production",
    }
    env.pop("TEST_RABBITMQ_URL", None)
    env.pop("TEST_REDIS_URL", None)
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, tests.conftest; "
            "print(os.environ['RABBITMQ_URL'], os.environ['REDIS_URL'], os.environ['ENVIRONMENT'])",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    suffix = os.environ.get("POSTGRES_DB_SUFFIX", "_test")
    assert shown[0] == f"amqp://guest:guest@127.0.0.1:5672/cinema{suffix}"
    assert shown[1] != "redis://127.0.0.1:6379/0"
    assert shown[2] == "test"


def test_a_missing_command_is_named_with_its_package_when_it_cannot_be_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root: no apt-get
    with pytest.raises(SystemExit):
        bootstrap.ensure_command("no-such-command-here", "some-package")
    assert "sudo apt-get install some-package" in capsys.readouterr().err


def test_a_gateway_port_that_the_links_and_origins_do_not_name_is_reported() -> None:
    example = {"PUBLIC_BASE_URL": "http://localhost:8000", "GATEWAY_PORT": "8000"}
    example["ALLOWED_ORIGINS"] = "http://localhost:8000,http://127.0.0.1:8000"
    assert bootstrap.gateway_mismatches(example) == []
    moved = {**example, "GATEWAY_PORT": "8080"}
    problems = bootstrap.gateway_mismatches(moved)
    assert len(problems) == 2
    assert "PUBLIC_BASE_URL" in problems[0]
    assert "ALLOWED_ORIGINS" in problems[1]
    # A public address is the operator's business, whatever port the gateway has locally.
    public = {**moved, "PUBLIC_BASE_URL": "https://cinema.example", "ALLOWED_ORIGINS": ""}
    assert bootstrap.gateway_mismatches(public) == []


def test_uv_installs_itself_where_the_system_python_refuses_user_installs(tmp_path: Path) -> None:
    # Debian 12's own Python, without uv on PATH: `pip install --user` is refused (PEP 668).
    managed = Path("/usr/lib/python3.11/EXTERNALLY-MANAGED")
    if not managed.exists() or Path("/usr/bin/uv").exists():
        pytest.skip("needs Debian's python3 (PEP 668) and no uv in /usr/bin")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "uv.sh"), "--version"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("uv ")
    assert (tmp_path / ".local" / "share" / "cinema-uv" / "bin" / "uv").exists()


def test_a_user_postgresql_refuses_is_named_with_what_to_change(
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = "cinema_nobody"  # no such role: 28000, as a wrong password is 28P01
    with pytest.raises(SystemExit) as exit_:
        bootstrap.ensure_databases({"POSTGRES_USER": user, "POSTGRES_PASSWORD": "x"})

    assert exit_.value.code == 1
    error = capsys.readouterr().err
    assert f"PostgreSQL refused '{user}'" in error
    assert "Set POSTGRES_USER and POSTGRES_PASSWORD in .env" in error
    assert f"ALTER ROLE {user} PASSWORD" in error
