"""Each image's contents suffice: its dependency group alone imports the app and its migrations."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from scripts import bootstrap

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH and no .env: the image has neither.
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        argv, cwd=cwd, env=clean, capture_output=True, text=True, timeout=240, check=False
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prefix", "package"), [(p, pkg) for p, (pkg, _) in bootstrap.SERVICES.items()]
)
def test_image_layout_imports_app_and_migrations_with_its_group_only(
    prefix: str, package: str, tmp_path: Path
) -> None:
    dockerfile = (ROOT / package / "Dockerfile").read_text()
    sync = re.search(r"RUN (uv sync [^\n]+)", dockerfile)
    assert sync, "the builder runs uv sync"
    # The builder stage: the lock file and pyproject only, the image's exact uv sync.
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    venv = tmp_path / "venv"
    synced = run(
        [str(ROOT / "scripts" / "uv.sh"), *sync.group(1).split()[1:], "--quiet"],
        tmp_path,
        UV_PROJECT_ENVIRONMENT=str(venv),
        UV_PYTHON_DOWNLOADS="never",
    )
    assert synced.returncode == 0, synced.stderr
    # The runtime stage: contracts and the package, nothing else of the repository.
    app = tmp_path / "app"
    for name in ("contracts", package):
        shutil.copytree(ROOT / name, app / name, ignore=shutil.ignore_patterns("__pycache__"))

    migrations = list((ROOT / package / "migrations" / "versions").glob("*.py"))
    probe = f"import {package}.main as m; print(m.app.title)"
    if package in bootstrap.DB_SERVICES:
        # Offline mode renders the SQL, so env.py and every revision import without a database.
        probe += (
            "; from alembic.config import main"
            f"; main(argv=['-c', '{package}/alembic.ini', 'upgrade', 'head', '--sql'])"
        )
    result = run([str(venv / "bin" / "python"), "-c", probe], app, ENVIRONMENT="production")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == package
    assert (venv / "bin" / "uvicorn").exists()
    if migrations:
        assert "CREATE TABLE alembic_version" in result.stdout
