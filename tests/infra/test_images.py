"""Each image's contents suffice: its dependency group alone imports the app and its migrations."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from scripts import bootstrap

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [package for package, _ in bootstrap.SERVICES.values()]


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH and no .env: the image has neither.
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        argv, cwd=cwd, env=clean, capture_output=True, text=True, timeout=240, check=False
    )


def env_file() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[name.strip()] = value.strip()
    return values


def build_and_probe(package: str, root: Path) -> tuple[subprocess.CompletedProcess[str], ...]:
    """The image's two stages, without Docker: its uv sync, then its app imported from /app."""
    dockerfile = (ROOT / package / "Dockerfile").read_text()
    sync = re.search(r"RUN (uv sync [^\n]+)", dockerfile)
    assert sync, "the builder runs uv sync"
    # The builder stage: the lock file and pyproject only, the image's exact uv sync.
    root.mkdir()
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, root / name)
    venv = root / "venv"
    synced = run(
        [str(ROOT / "scripts" / "uv.sh"), *sync.group(1).split()[1:], "--quiet"],
        root,
        UV_PROJECT_ENVIRONMENT=str(venv),
        UV_PYTHON_DOWNLOADS="never",
    )
    if synced.returncode != 0:
        return (synced,)
    # The runtime stage: contracts and the package, nothing else of the repository.
    app = root / "app"
    for name in ("contracts", package):
        shutil.copytree(ROOT / name, app / name, ignore=shutil.ignore_patterns("__pycache__"))
    probe = f"import {package}.main as m; print(m.app.title)"
    if package in bootstrap.DB_SERVICES:
        # Offline mode renders the SQL, so env.py and every revision import without a database.
        probe += (
            "; from alembic.config import main"
            f"; main(argv=['-c', '{package}/alembic.ini', 'upgrade', 'head', '--sql'])"
        )
    uvicorn = run([str(venv / "bin" / "uvicorn"), "--version"], app)
    return (
        synced,
        uvicorn,
        # What compose gives the container: the variables of .env, in production mode.
        run(
            [str(venv / "bin" / "python"), "-c", probe],
            app,
            **{**env_file(), "ENVIRONMENT": "production"},
        ),
    )


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, ...]]:
    # Five interpreters compiling a fresh environment each: side by side, they take half the time.
    root = tmp_path_factory.mktemp("images")
    with ThreadPoolExecutor(max_workers=len(PACKAGES)) as pool:
        futures = {pkg: pool.submit(build_and_probe, pkg, root / pkg) for pkg in PACKAGES}
        return {pkg: future.result() for pkg, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("package", PACKAGES)
def test_image_layout_imports_app_and_migrations_with_its_group_only(
    package: str, probes: dict[str, tuple[subprocess.CompletedProcess[str], ...]]
) -> None:
    synced, *rest = probes[package]
    assert synced.returncode == 0, synced.stderr
    uvicorn, result = rest
    assert uvicorn.returncode == 0, uvicorn.stderr
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == package
    if list((ROOT / package / "migrations" / "versions").glob("*.py")):
        assert "CREATE TABLE alembic_version" in result.stdout
