"""docker-compose.yml, the Dockerfiles, the gateway template, .env.example and the Procfile agree."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import tomllib
import typing
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml
from pydantic import SecretBytes, SecretStr
from pydantic_settings import BaseSettings

from contracts.settings import ServiceSettings
from scripts import bootstrap

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
NGINX_TEMPLATE = (ROOT / "nginx" / "default.conf.template").read_text()

# Every import package with a main.py is a service; the gateway prefix is its PREFIX.
PACKAGES = sorted(path.parent.name for path in ROOT.glob("*/main.py"))

# DESIGN.md, "Configuration": names the README, the runner and outside checks rely on.
FIXED_NAMES = [
    "PUBLIC_BASE_URL",
    "GATEWAY_PORT",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USER",
    "SMTP_PASSWORD",
    "SMTP_FROM",
    "FIRST_SUPERUSER_EMAIL",
    "FIRST_SUPERUSER_PASSWORD",
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "RABBITMQ_URL",
    "REDIS_URL",
]
# The only containers reachable from outside: the gateway and the two web UIs.
PUBLISHING = {"nginx", "mail"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY$")


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[name.strip()] = value
    return values


def prefix_of(package: str) -> str:
    return str(importlib.import_module(f"{package}.main").PREFIX)


def settings_class(package: str) -> type[ServiceSettings]:
    settings: type[ServiceSettings] = importlib.import_module(f"{package}.config").Settings
    return settings


def port_of(package: str) -> int:
    default = settings_class(package).model_fields["port"].default
    assert isinstance(default, int)
    return default


def dockerfile(package: str) -> str:
    return (ROOT / package / "Dockerfile").read_text()


def dependency_groups() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(pyproject["dependency-groups"])


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and not line.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def service(name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = COMPOSE["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


def depends_on(name: str) -> dict[str, str]:
    return {dep: spec["condition"] for dep, spec in service(name).get("depends_on", {}).items()}


def is_one_shot(name: str) -> bool:
    return service(name).get("restart") == "no"


def env_names(settings: type[BaseSettings]) -> dict[str, bool]:
    """Variable name -> whether .env.example must hold it (no default, or a secret)."""
    prefix = str(settings.model_config.get("env_prefix") or "")
    names = {}
    for field_name, field in settings.model_fields.items():
        name = (prefix + (field.alias or field_name)).upper()
        types = (field.annotation, *typing.get_args(field.annotation))
        secret = any(t in (SecretStr, SecretBytes) for t in types) or (
            str in types and bool(SECRET_NAME.search(name))
        )
        # An optional override (default None) is not something every set-up has to fill in.
        names[name] = field.is_required() or (secret and field.default is not None)
    return names


def test_services_are_the_five_of_the_design() -> None:
    assert [prefix_of(p) for p in PACKAGES] == ["auth", "recom", "ugc", "ws", "notifications"]
    assert {prefix_of(p): (p, port_of(p)) for p in PACKAGES} == bootstrap.SERVICES


@pytest.mark.parametrize("package", PACKAGES)
def test_compose_service_builds_and_checks_its_package(package: str) -> None:
    prefix, port = prefix_of(package), port_of(package)
    spec = service(prefix)
    assert spec["build"] == {"context": ".", "dockerfile": f"{package}/Dockerfile"}
    assert spec["image"] == f"cinema-{prefix}"
    assert spec["env_file"] == ".env"
    assert "ports" not in spec, "only the gateway publishes ports"
    probe = " ".join(spec["healthcheck"]["test"])
    assert f"urlopen('http://127.0.0.1:{port}/{prefix}/health', timeout=2)" in probe
    assert (
        depends_on(prefix).items()
        >= {
            "postgres": "service_healthy",
            "rabbitmq": "service_healthy",
            "redis": "service_healthy",
        }.items()
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_dockerfile_installs_only_its_group_and_runs_unprivileged(package: str) -> None:
    prefix, port = prefix_of(package), port_of(package)
    text = dockerfile(package)
    assert prefix in dependency_groups()
    assert f"uv sync --frozen --no-dev --no-default-groups --group {prefix}\n" in text
    assert re.search(r"pip install --no-cache-dir uv==\d+\.\d+\.\d+\n", text), "uv is pinned"
    images = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert images in (["python:3.11-slim"], ["python:3.12-slim"])
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    runtime = text.split("\nFROM ")[-1]
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert "COPY contracts/ contracts/" in runtime
    assert f"COPY {package}/ {package}/" in runtime
    user = re.findall(r"^USER (\S+)$", runtime, re.MULTILINE)
    assert user
    assert user[-1] not in ("root", "0")
    assert f"EXPOSE {port}\n" in runtime
    cmd = re.search(r"^CMD (\[.*?\])$", runtime, re.MULTILINE | re.DOTALL)
    assert cmd, "exec-form CMD"
    argv = json.loads(cmd.group(1).replace("\\\n", ""))
    assert argv[:2] == ["uvicorn", f"{package}.main:app"]
    assert argv[argv.index("--port") + 1] == str(port)
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


def test_dockerignore_keeps_secrets_and_local_state_out_of_images() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*") :][:1] == ["*"], "everything is excluded unless listed"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "contracts", *PACKAGES}


@pytest.mark.parametrize("package", PACKAGES)
def test_gateway_routes_prefix_to_service(package: str) -> None:
    prefix, port = prefix_of(package), port_of(package)
    upstream = f"{prefix.upper()}_UPSTREAM"
    assert re.search(
        rf"upstream {prefix} {{ zone {prefix} \d+k; server \${{{upstream}}};", NGINX_TEMPLATE
    )
    location = re.search(rf"location /{prefix}/ {{\s*proxy_pass http://{prefix};", NGINX_TEMPLATE)
    assert location, f"no location /{prefix}/ in the gateway template"
    # A restarted container's new address is looked up again (`resolve`), not kept from start.
    assert service("nginx")["environment"][upstream] == f"{prefix}:{port} resolve"
    assert depends_on("nginx")[prefix] == "service_healthy"


def test_gateway_publishes_listen_port_and_mounts_template() -> None:
    nginx = service("nginx")
    version = re.fullmatch(r"nginx:(\d+)\.(\d+)(?:\.(\d+))?-alpine", nginx["image"])
    assert version, nginx["image"]
    # `resolve` on an upstream server needs 1.27.3 or later, and Docker's DNS as the resolver.
    assert tuple(int(n or 0) for n in version.groups()) >= (1, 27, 3)
    assert nginx["environment"]["GATEWAY_RESOLVER"] == "127.0.0.11"
    assert nginx["environment"]["GATEWAY_LISTEN"] == "80"
    assert nginx["ports"] == ["${GATEWAY_PORT:-8000}:80"]
    assert (
        "./nginx/default.conf.template:/etc/nginx/templates/default.conf.template:ro"
        in nginx["volumes"]
    )
    assert "location /ws/" in NGINX_TEMPLATE
    assert "proxy_set_header Upgrade $http_upgrade;" in NGINX_TEMPLATE


def test_only_gateway_and_web_uis_publish_ports() -> None:
    publishing = {name for name, spec in COMPOSE["services"].items() if "ports" in spec}
    assert publishing == PUBLISHING
    assert service("mail")["ports"] == ["${MAIL_UI_PORT:-1080}:1080"]


def test_backing_servers_are_the_designed_images() -> None:
    assert service("postgres")["image"].startswith("postgres:16")
    assert service("rabbitmq")["image"].startswith("rabbitmq:3.13-management")
    assert service("redis")["image"].startswith("redis:7")
    assert service("mail")["image"].startswith("maildev/maildev:")


def test_every_long_running_container_has_a_healthcheck_and_named_volumes() -> None:
    for name, spec in COMPOSE["services"].items():
        if not is_one_shot(name):
            assert spec.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in COMPOSE["volumes"], (name, volume)


def test_dependencies_wait_for_health_or_completion() -> None:
    for name in COMPOSE["services"]:
        for dep, condition in depends_on(name).items():
            expected = "service_completed_successfully" if is_one_shot(dep) else "service_healthy"
            assert condition == expected, f"{name} -> {dep}: {condition}"


@pytest.mark.parametrize("package", sorted(bootstrap.DB_SERVICES))
def test_database_service_migrates_in_one_shot_before_start(package: str) -> None:
    prefix = prefix_of(package)
    assert (ROOT / package / "alembic.ini").exists()
    assert settings_class(package).db_name == bootstrap.DB_SERVICES[package]
    job = service(f"{prefix}-migrate")
    assert job["command"] == ["alembic", "-c", f"{package}/alembic.ini", "upgrade", "head"]
    assert job["image"] == service(prefix)["image"]
    assert job["environment"].items() <= service(prefix)["environment"].items()
    assert is_one_shot(f"{prefix}-migrate")
    assert depends_on(f"{prefix}-migrate") == {"postgres": "service_healthy"}
    assert depends_on(prefix)[f"{prefix}-migrate"] == "service_completed_successfully"


def test_packages_with_migrations_are_the_database_services() -> None:
    with_alembic = {path.parent.name for path in ROOT.glob("*/alembic.ini")}
    assert with_alembic == set(bootstrap.DB_SERVICES)


def test_postgres_init_creates_every_database() -> None:
    mount = "./scripts/postgres-initdb.sql:/docker-entrypoint-initdb.d/10-databases.sql:ro"
    assert mount in service("postgres")["volumes"]
    sql = (ROOT / "scripts" / "postgres-initdb.sql").read_text()
    created = re.findall(r"^CREATE DATABASE (\w+);$", sql, re.MULTILINE)
    assert created == [*bootstrap.DB_SERVICES.values(), bootstrap.CONTENT_DB]


def test_demo_loader_is_a_one_shot_after_recom_migrations() -> None:
    demo = service("recom-demo")
    assert demo["command"] == ["python", "-m", "fastapi_recom.demo"]
    assert demo["image"] == service("recom")["image"]
    assert is_one_shot("recom-demo")
    assert depends_on("recom-demo")["recom-migrate"] == "service_completed_successfully"
    # fastapi_recom.movielens fetches the wheel with uv when there is no pip, as in the image.
    assert "COPY --from=builder /usr/local/bin/uv /usr/local/bin/uv" in dockerfile("fastapi_recom")
    assert "demo-cache:/app/.cache" in demo["volumes"]


def test_services_reach_the_other_containers() -> None:
    for prefix in bootstrap.SERVICES:
        environment = service(prefix)["environment"]
        assert environment["POSTGRES_HOST"] == "postgres"
        assert environment["RABBITMQ_URL"].endswith("@rabbitmq:5672/")
        assert environment["REDIS_URL"].startswith("redis://redis:6379/")
        assert environment["SMTP_HOST"] == "mail"
        assert environment["ENVIRONMENT"] == "production"
    rabbit = service("rabbitmq")["environment"]
    user, password = rabbit["RABBITMQ_DEFAULT_USER"], rabbit["RABBITMQ_DEFAULT_PASS"]
    assert (
        service("auth")["environment"]["RABBITMQ_URL"] == f"amqp://{user}:{password}@rabbitmq:5672/"
    )


def test_settings_variables_without_default_or_secret_are_in_env_example() -> None:
    example = env_example()
    classes: list[type[BaseSettings]] = [ServiceSettings, *map(settings_class, PACKAGES)]
    missing = {
        f"{cls.__module__}.{cls.__name__}: {name}"
        for cls in classes
        for name, needed in env_names(cls).items()
        if needed and name not in example
    }
    assert not missing


def test_compose_variables_are_in_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_TEXT))
    assert used, "compose reads its settings from .env"
    assert used - set(env_example()) == set()


def test_compose_requires_every_secret() -> None:
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", COMPOSE_TEXT))
    secrets = {name for name, value in env_example().items() if value == bootstrap.PLACEHOLDER}
    assert secrets <= required


def test_design_fixed_names_are_in_env_example() -> None:
    assert set(FIXED_NAMES) - set(env_example()) == set()


def test_procfile_runs_the_same_apps_on_the_same_ports() -> None:
    entries = procfile()
    assert set(entries) == {*bootstrap.SERVICES, "gateway", "mail"}
    for prefix, (package, port) in bootstrap.SERVICES.items():
        command = entries[prefix].split()
        assert command[:2] == [".venv/bin/uvicorn", f"{package}.main:app"]
        assert command[command.index("--port") + 1] == f"${{{prefix.upper()}_PORT:-{port}}}"
    assert "-p .run/nginx -c nginx.conf" in entries["gateway"]
    assert "--smtp ${SMTP_PORT:-1025} --web ${MAIL_UI_PORT:-1080}" in entries["mail"]
    assert "aiosmtpd -n -u -l 127.0.0.1:${SMTP_PORT:-1025}" in entries["mail"]


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's docker-compose)")
    # A clean environment: compose interpolates the caller's variables before the env file.
    return subprocess.run(
        [
            binary,
            "--project-directory",
            str(ROOT),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "--env-file",
            str(env_file),
            "config",
            "--quiet",
        ],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docker_compose_config_accepts_the_file() -> None:
    result = compose_config(ROOT / ".env.example")
    assert result.returncode == 0, result.stderr


def test_docker_compose_config_names_a_missing_secret(tmp_path: Path) -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    env_file = tmp_path / "env"
    env_file.write_text("\n".join(line for line in lines if not line.startswith("JWT_PUBLIC_KEY")))
    result = compose_config(env_file)
    assert result.returncode != 0
    assert "set JWT_PUBLIC_KEY in .env" in result.stderr


def test_gateway_template_renders_for_local_run_and_passes_nginx_check(tmp_path: Path) -> None:
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (make run installs nginx-light)")
    config = bootstrap.render_nginx({"GATEWAY_PORT": "8000"}, tmp_path)
    site = (tmp_path / "nginx" / "default.conf").read_text()
    assert "${" not in site.replace("${...}", "")
    assert "listen 8000;" in site
    assert "server 127.0.0.1:8004;" in site
    result = subprocess.run(
        ["nginx", "-t", "-p", str(config.parent), "-c", config.name, "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_gateway_template_renders_the_same_with_the_image_envsubst() -> None:
    if shutil.which("envsubst") is None:
        pytest.skip("envsubst (gettext-base) is not installed")
    values = {name: str(value) for name, value in service("nginx")["environment"].items()}
    # The nginx image substitutes every variable defined in the container, nothing else.
    environment = {"PATH": os.environ["PATH"], "HOME": "/root", **values}
    shell_format = " ".join(f"${{{name}}}" for name in environment)
    result = subprocess.run(
        ["envsubst", shell_format],
        input=NGINX_TEMPLATE,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == Template(NGINX_TEMPLATE).safe_substitute(values)
    assert "server ws:8004 resolve;" in result.stdout
    assert "resolver 127.0.0.11 valid=10s ipv6=off;" in result.stdout
    assert "$cinema_request_id" in result.stdout
