"""The demo loader on a small fixture in MovieLens-100K's format (the real wheel is not needed)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from fastapi_recom import demo, movielens
from fastapi_recom.config import get_settings
from tests.recom.catalogue_support import content, make_etl, recom
from tests.support import ROOT

__all__ = ["content", "recom"]  # fixtures

# Ids far above MovieLens-100K's, so the fixture never meets the real demo data.
ITEMS = [
    ("90001", "Toy Story", "1995", "Animation Children's Comedy"),
    ("90002", "GoldenEye", "1995", "Action Adventure Thriller"),
    ("90003", "Lost Reel", "", "unknown"),
]
INTERACTIONS = [
    ("9001", "90001", "5", "881250949"),
    ("9001", "90002", "3", "881251000"),
    ("9002", "90001", "1", "891717742"),
    ("9002", "90003", "4", "891717800"),
]
USERS = [movielens.user_uuid(u) for u in ("9001", "9002")]


def _write(path: Path, header: str, rows: Sequence[tuple[str, ...]]) -> None:
    path.write_text("\n".join([header, *("\t".join(r) for r in rows)]) + "\n", encoding="latin-1")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    _write(
        tmp_path / "ml-100k.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
        ITEMS,
    )
    _write(
        tmp_path / "ml-100k.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float",
        INTERACTIONS,
    )
    return tmp_path


@pytest.fixture
async def ratings(recom: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """recom's rating table without the fixture's viewers, before and after."""
    await recom.execute("DELETE FROM rating WHERE user_id = ANY($1::uuid[])", USERS)
    yield recom
    await recom.execute("DELETE FROM rating WHERE user_id = ANY($1::uuid[])", USERS)


async def test_demo_command_loads_films_and_ratings_and_etl_carries_the_films(
    content: asyncpg.Connection, ratings: asyncpg.Connection, data_dir: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fastapi_recom.demo", "--data-dir", str(data_dir)],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "3 films (3 new)" in result.stderr
    assert "4 ratings (4 new)" in result.stderr
    films = await content.fetch("SELECT id, title, release_year FROM content.film_work")
    assert {(r["id"], r["title"], r["release_year"]) for r in films} == {
        (movielens.movie_uuid("90001"), "Toy Story", 1995),
        (movielens.movie_uuid("90002"), "GoldenEye", 1995),
        (movielens.movie_uuid("90003"), "Lost Reel", None),
    }
    rows = await ratings.fetch(
        "SELECT user_id, movie_id, score, rated_at, deleted FROM rating "
        "WHERE user_id = ANY($1::uuid[])",
        USERS,
    )
    assert {tuple(r) for r in rows} == {
        (
            movielens.user_uuid(u),
            movielens.movie_uuid(i),
            int(stars) * 2,
            datetime.fromtimestamp(int(ts), UTC),
            False,
        )
        for u, i, stars, ts in INTERACTIONS
    }

    etl = make_etl()
    await etl.run_once()
    await etl.close()
    catalogue = await ratings.fetch(
        "SELECT m.title, array_agg(g.name ORDER BY g.name) FILTER (WHERE g.name IS NOT NULL) "
        "FROM movie m LEFT JOIN movie_genre mg USING (movie_id) LEFT JOIN genre g USING (genre_id) "
        "GROUP BY m.title"
    )
    assert {r[0]: r[1] for r in catalogue} == {
        "Toy Story": ["Animation", "Children's", "Comedy"],
        "GoldenEye": ["Action", "Adventure", "Thriller"],
        "Lost Reel": None,
    }


async def test_demo_second_run_changes_nothing(
    content: asyncpg.Connection, ratings: asyncpg.Connection, data_dir: Path
) -> None:
    settings = get_settings()
    first = await demo.load_demo(settings, data_dir=data_dir)
    assert first == demo.DemoReport(films=3, films_added=3, ratings=4, ratings_added=4)
    etl = make_etl()
    await etl.run_once()
    films_before = await content.fetch("SELECT * FROM content.film_work ORDER BY id")
    ratings_before = await ratings.fetch("SELECT * FROM rating ORDER BY user_id, movie_id")

    skipped = await demo.load_demo(settings, data_dir=data_dir)
    forced = await demo.load_demo(settings, data_dir=data_dir, force=True)
    after = await etl.run_once()
    await etl.close()

    assert skipped is None
    assert forced == demo.DemoReport(films=3, films_added=0, ratings=4, ratings_added=0)
    assert await content.fetch("SELECT * FROM content.film_work ORDER BY id") == films_before
    assert await ratings.fetch("SELECT * FROM rating ORDER BY user_id, movie_id") == ratings_before
    assert not after.changed


def test_demo_without_the_dataset_says_so_and_exits_zero(
    content: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unavailable() -> Path:
        raise movielens.DatasetUnavailable("could not download recbole==1.2.1")

    monkeypatch.setattr(movielens, "fetch_dataset", unavailable)

    with caplog.at_level(logging.WARNING, logger="fastapi_recom.demo"):
        assert demo.main([]) == 0

    assert "MovieLens-100K demo data unavailable (could not download recbole==1.2.1)" in (
        caplog.text
    )
    assert "starts with an empty catalogue" in caplog.text
