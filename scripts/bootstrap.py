"""Prepare a machine for `make run` or `make test`: .env with fresh keys, databases, migrations."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".run"
ENV_FILE = ROOT / ".env"
ENV_EXAMPLE = ROOT / ".env.example"
PLACEHOLDER = "change-me"

# Packages with their own database and migrations, in DESIGN.md's order.
DB_SERVICES = {
    "fastapi_auth": "auth",
    "fastapi_recom": "recom",
    "fastapi_ws": "ws",
    "notifications_service": "notifications",
}
# The cinema's content database, read by recom's ETL (not owned by the suite).
CONTENT_DB = "content"

SERVICES = {
    "auth": ("fastapi_auth", 8001),
    "ugc": ("fastapi_ugc", 8002),
    "recom": ("fastapi_recom", 8003),
    "ws": ("fastapi_ws", 8004),
    "notifications": ("notifications_service", 8005),
}

HOW_TO_START = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "RabbitMQ": "rabbitmq-server -detached",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
}


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def fail(message: str) -> None:
    print(f"\nERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------- .env


def generate_key_pair() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private.strip().replace("\n", "\\n"), public.strip().replace("\n", "\\n")


def fill_placeholders(text: str) -> str:
    private, public = generate_key_pair()
    fresh = {"JWT_PRIVATE_KEY": private, "JWT_PUBLIC_KEY": public}
    lines = []
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and value.strip() == PLACEHOLDER:
            value = fresh.get(name.strip()) or secrets.token_urlsafe(32)
        lines.append(f"{name}{sep}{value}" if sep else line)
    return "\n".join(lines) + "\n"


def has_placeholders(text: str) -> bool:
    return any(
        value.strip() == PLACEHOLDER
        for line in text.splitlines()
        if not line.lstrip().startswith("#")
        for _, sep, value in [line.partition("=")]
        if sep
    )


def ensure_env_file() -> None:
    if ENV_FILE.exists():
        if has_placeholders(ENV_FILE.read_text()):
            ENV_FILE.write_text(fill_placeholders(ENV_FILE.read_text()))
            say(".env had placeholders: filled them with fresh secrets")
        return
    ENV_FILE.write_text(fill_placeholders(ENV_EXAMPLE.read_text()))
    ENV_FILE.chmod(0o600)
    say("wrote .env from .env.example with a new RS256 key pair and random secrets")


def load_env() -> dict[str, str]:
    """`.env` values overridden by the process environment, as the services read them."""
    values: dict[str, str] = {}
    for line in ENV_FILE.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[name.strip()] = value.strip()
    values.update({k: v for k, v in os.environ.items() if k in values or k.isupper()})
    return values


# ---------------------------------------------------------------- dependencies


def check_dependencies(env: dict[str, str]) -> None:
    """Exit with a clear message naming what is down and how to start it."""
    rabbit = urlsplit(env.get("RABBITMQ_URL", "amqp://127.0.0.1:5672/"))
    redis = urlsplit(env.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    targets = {
        "PostgreSQL": (env.get("POSTGRES_HOST", "127.0.0.1"), int(env.get("POSTGRES_PORT", 5432))),
        "RabbitMQ": (rabbit.hostname or "127.0.0.1", rabbit.port or 5672),
        "Redis": (redis.hostname or "127.0.0.1", redis.port or 6379),
    }
    down = []
    for name, (host, port) in targets.items():
        try:
            with socket.create_connection((host, port), timeout=2):
                pass
        except OSError:
            down.append(name)
            print(
                f"  {name} is not reachable at {host}:{port}. Start it with:\n"
                f"      {HOW_TO_START[name]}",
                file=sys.stderr,
            )
    if down:
        fail(f"{', '.join(down)} not reachable; start it and run the command again.")


# ---------------------------------------------------------------- databases


async def _admin_connection(env: dict[str, str]) -> Any:
    import asyncpg

    user = env.get("POSTGRES_USER", "postgres")
    try:
        return await asyncpg.connect(
            host=env.get("POSTGRES_HOST", "127.0.0.1"),
            port=int(env.get("POSTGRES_PORT", 5432)),
            user=user,
            password=env.get("POSTGRES_PASSWORD") or None,
            database="postgres",
            timeout=5,
        )
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        # 28000 and 28P01: a server that asks for a password (Debian's pg_hba.conf does on
        # 127.0.0.1) knows none, or another, for the user; .env's was generated for compose.
        fail(
            f"PostgreSQL refused {user!r}: {exc}. Set POSTGRES_USER and POSTGRES_PASSWORD in "
            ".env to a superuser the server knows, or give the user .env's password: "
            f"sudo -u postgres psql -c \"ALTER ROLE {user} PASSWORD '<POSTGRES_PASSWORD>'\""
        )
        raise


def database_names(env: dict[str, str]) -> list[str]:
    suffix = env.get("POSTGRES_DB_SUFFIX", "")
    return [db + suffix for db in [*DB_SERVICES.values(), CONTENT_DB]]


async def _ensure_databases(env: dict[str, str], names: list[str]) -> None:
    conn = await _admin_connection(env)
    try:
        existing = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
        for name in names:
            if name not in existing:
                await conn.execute(f'CREATE DATABASE "{name}"')
                say(f"created database {name}")
    finally:
        await conn.close()


async def _drop_databases(env: dict[str, str], names: list[str]) -> None:
    conn = await _admin_connection(env)
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def ensure_databases(env: dict[str, str]) -> None:
    asyncio.run(_ensure_databases(env, database_names(env)))


def drop_databases(env: dict[str, str]) -> None:
    """Drop every database of the suite for `POSTGRES_DB_SUFFIX` (tests start from nothing)."""
    asyncio.run(_drop_databases(env, database_names(env)))


def migrate(env: dict[str, str]) -> None:
    # The databases are independent, so their migrations run side by side.
    jobs = {
        package: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "alembic",
                "-c",
                str(ROOT / package / "alembic.ini"),
                "upgrade",
                "head",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for package in DB_SERVICES
    }
    failed = []
    for package, job in jobs.items():
        output, _ = job.communicate()
        if job.returncode != 0:
            sys.stderr.write(output)
            failed.append(package)
    if failed:
        fail(f"migrations of {', '.join(failed)} failed")
    say("migrations applied: " + ", ".join(DB_SERVICES))


def reset_vhost(env: dict[str, str]) -> None:
    """Drop the test virtual host with its queues, so a run never inherits another's backlog."""
    vhost = urlsplit(env["RABBITMQ_URL"]).path.lstrip("/")
    if vhost and shutil.which("rabbitmqctl") is not None:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, check=False
        )


def ensure_vhost(env: dict[str, str]) -> None:
    """Tests use a virtual host of their own so they never touch a running suite's queues."""
    vhost = urlsplit(env["RABBITMQ_URL"]).path.lstrip("/")
    if not vhost or shutil.which("rabbitmqctl") is None:
        return
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, check=False
    ).stdout.split()
    if vhost not in listed:
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    user = urlsplit(env["RABBITMQ_URL"]).username or "guest"
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )


def load_demo(env: dict[str, str]) -> None:
    """MovieLens-100K into the content database and recom, when the catalogue is empty."""
    result = subprocess.run(
        [sys.executable, "-m", "fastapi_recom.demo"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=False,
    )
    if result.returncode != 0:
        say("demo data not loaded (see above); the suite starts with what the databases hold")


# ---------------------------------------------------------------- gateway and mail


def render_nginx(env: dict[str, str], run_dir: Path = RUN_DIR) -> Path:
    """Render the one gateway template for a local run, inside a main context of our own."""
    nginx_dir = run_dir / "nginx"
    (nginx_dir / "temp").mkdir(parents=True, exist_ok=True)
    values = {
        "GATEWAY_LISTEN": env.get("GATEWAY_PORT", "8000"),
        "GATEWAY_RESOLVER": "127.0.0.1",  # never asked: the upstreams are addresses
        **{
            f"{name.upper()}_UPSTREAM": f"127.0.0.1:{env.get(f'{name.upper()}_PORT', port)}"
            for name, (_, port) in SERVICES.items()
        },
    }
    site = Template((ROOT / "nginx" / "default.conf.template").read_text()).safe_substitute(values)
    (nginx_dir / "default.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = nginx_dir / "temp"
    # The local gateway shares the machine with the five services: half the cores, not all.
    # On two cores one nginx worker (it proxies tens of thousands of requests a second) left
    # recom's workers 10-20 % less CPU per request than two did (bench.latency, alternated).
    workers = max(1, (os.cpu_count() or 2) // 2)
    (nginx_dir / "nginx.conf").write_text(
        f"""{user}worker_processes {workers};
pid {nginx_dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {nginx_dir}/default.conf;
}}
"""
    )
    return nginx_dir / "nginx.conf"


def ensure_command(command: str, package: str) -> None:
    """Install Debian's `package` when `command` is missing and we may (root, apt-get)."""
    if shutil.which(command):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say(f"installing {command} (Debian package {package})")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", package],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        return
    fail(f"{command} is not installed: `sudo apt-get install {package}` (or your system's).")


def ensure_nginx() -> None:
    ensure_command("nginx", "nginx-light")


# What the suite runs besides Python: the gateway (end-to-end tests), a headless browser (the
# chat page) and compose's own parser (the compose file's check).
TEST_COMMANDS = {"nginx": "nginx-light", "chromium": "chromium", "docker-compose": "docker-compose"}


def ensure_maildev() -> Path | None:
    binary = RUN_DIR / "maildev" / "node_modules" / ".bin" / "maildev"
    if binary.exists():
        return binary
    if shutil.which("npm") is None:
        say("npm not found: e-mails will be printed instead of shown in MailDev's web UI")
        return None
    say("installing the maildev mail catcher with npm")
    result = subprocess.run(
        [
            "npm",
            "install",
            "--silent",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(RUN_DIR / "maildev"),
            "maildev@2",
        ],
        check=False,
    )
    return binary if result.returncode == 0 and binary.exists() else None


def write_procfile_env(env: dict[str, str], run_dir: Path = RUN_DIR) -> Path:
    """The few values the Procfile itself expands (ports), for `honcho -e`.

    honcho's own reading of `.env` would mangle it (it drops spaces and backslashes, so the
    PEM keys break); the services read `.env` themselves through their settings.
    """
    values = {
        **{f"{name.upper()}_PORT": str(port) for name, (_, port) in SERVICES.items()},
        "GATEWAY_PORT": "8000",
        "SMTP_PORT": "1025",
        "MAIL_UI_PORT": "1080",
    }
    values = {name: env.get(name, default) for name, default in values.items()}
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "procfile.env"
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


def gateway_mismatches(env: dict[str, str]) -> list[str]:
    """Local addresses in `.env` that name another port than the gateway's: changing only
    GATEWAY_PORT would leave e-mail links dead and the chat refusing the page's origin."""
    port = env.get("GATEWAY_PORT", "8000").rpartition(":")[2]
    local = {"localhost", "127.0.0.1"}
    problems = []
    base = urlsplit(env.get("PUBLIC_BASE_URL", ""))
    if base.hostname in local and str(base.port or 80) != port:
        problems.append(f"PUBLIC_BASE_URL ({base.geturl()}) is not on GATEWAY_PORT {port}")
    origins = [urlsplit(o.strip()) for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip()]
    on_local = [o for o in origins if o.hostname in local]
    if on_local and not any(str(o.port or 80) == port for o in on_local):
        problems.append(f"no local origin in ALLOWED_ORIGINS is on GATEWAY_PORT {port}")
    return problems


def banner(env: dict[str, str], *, mail_ui: bool = True) -> None:
    base = f"http://localhost:{env.get('GATEWAY_PORT', '8000')}"
    mail = (
        f"http://localhost:{env.get('MAIL_UI_PORT', '1080')}/"
        if mail_ui
        else "none: e-mails are printed by the mail process (install npm for MailDev)"
    )
    lines = [
        "Cinema recommendations suite",
        f"  Gateway            {base}/",
        *(f"  {name:<19}{base}/{name}/openapi" for name in SERVICES),
        f"  Chat page          {base}/ws/v1/chat/",
        f"  Mail catcher UI    {mail}",
        f"  Superuser          {env.get('FIRST_SUPERUSER_EMAIL', '')} (password in .env)",
        "  Ctrl-C stops everything.",
    ]
    width = max(map(len, lines)) + 2
    print("\n" + "=" * width + "\n" + "\n".join(lines) + "\n" + "=" * width + "\n", flush=True)


# ---------------------------------------------------------------- entry point


def prepare(env: dict[str, str]) -> None:
    check_dependencies(env)
    ensure_databases(env)
    migrate(env)


def prepare_own(env: dict[str, str]) -> None:
    """`prepare` for a run with a broker vhost of its own (the tests', a bench's)."""
    check_dependencies(env)
    ensure_vhost(env)
    ensure_databases(env)
    migrate(env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["run", "test", "env"])
    args = parser.parse_args()
    ensure_env_file()
    if args.mode == "env":
        # Docker Compose needs only `.env`; the containers create their own databases.
        return
    env = load_env()
    if args.mode == "test":
        # The suite's own databases, broker vhost and Redis database.
        env.update(test_environment(env))
        for command, package in TEST_COMMANDS.items():
            ensure_command(command, package)
        prepare_own(env)
        return
    for problem in gateway_mismatches(env):
        say(f"warning: {problem}; set it in .env")
    prepare(env)
    load_demo(env)
    ensure_nginx()
    render_nginx(env)
    write_procfile_env(env)
    maildev = ensure_maildev()
    banner(env, mail_ui=maildev is not None)


def test_environment(env: dict[str, str]) -> dict[str, str]:
    rabbit = urlsplit(env.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    suffix = os.environ.get("POSTGRES_DB_SUFFIX", "_test")
    return {
        "ENVIRONMENT": "test",
        "POSTGRES_DB_SUFFIX": suffix,
        # The vhost follows the databases' suffix: a run with its own suffix never resets
        # (the suite deletes its vhost at the start) another run's queues.
        "RABBITMQ_URL": os.environ.get(
            "TEST_RABBITMQ_URL", rabbit._replace(path=f"/cinema{suffix}").geturl()
        ),
        "REDIS_URL": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/1"),
    }


def bench_environment(env: dict[str, str]) -> dict[str, str]:
    """The benches' settings: the suite's servers, but databases and a broker vhost of their
    own, so a bench left running (or killed without its children) never takes a test's
    messages or rows, and a test never empties a bench's tables."""
    test = test_environment(env)
    rabbit = urlsplit(test["RABBITMQ_URL"])
    vhost = rabbit.path.lstrip("/") or "cinema"
    return {
        **test,
        "POSTGRES_DB_SUFFIX": f"{test['POSTGRES_DB_SUFFIX']}_bench",
        "RABBITMQ_URL": rabbit._replace(path=f"/{vhost}_bench").geturl(),
    }


def prepare_bench() -> dict[str, str]:
    """`bench_environment` applied to this process, its vhost and databases made and migrated."""
    ensure_env_file()
    env = load_env()
    env.update(bench_environment(env))
    os.environ.update(env)
    prepare_own(env)
    return env


if __name__ == "__main__":
    main()
