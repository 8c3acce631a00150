"""Catalogue test tools: a clean content database and catalogue, source writers, an ETL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from fastapi_recom.config import get_settings
from fastapi_recom.etl import CatalogueEtl, apply_content_schema

CONTENT_TABLES = "content.film_work, content.genre, content.person, content.genre_film_work, content.person_film_work, content.deleted_row"
CATALOGUE_TABLES = "movie, movie_withdrawn, genre, person, movie_genre, movie_person, etl_state"


async def _wipe(content: asyncpg.Connection, recom: asyncpg.Connection) -> None:
    # TRUNCATE fires no delete trigger: the deletion log starts empty too.
    await content.execute(f"TRUNCATE {CONTENT_TABLES}")
    await recom.execute(f"TRUNCATE {CATALOGUE_TABLES}")


@pytest.fixture
async def content() -> AsyncIterator[asyncpg.Connection]:
    """The content database, emptied (with recom's catalogue and ETL state) before and after."""
    settings = get_settings()
    await apply_content_schema(settings.content_dsn)
    conn = await asyncpg.connect(settings.content_dsn)
    recom = await asyncpg.connect(settings.recom_dsn)
    await _wipe(conn, recom)
    yield conn
    await _wipe(conn, recom)
    await conn.close()
    await recom.close()


@pytest.fixture
async def recom() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(get_settings().recom_dsn)
    yield conn
    await conn.close()


def make_etl(source_dsn: str | None = None, **options: float) -> CatalogueEtl:
    settings = get_settings()
    defaults: dict[str, float] = {"batch_size": 100, "interval": 0.05, "horizon_margin": 0.0}
    return CatalogueEtl(
        source_dsn or settings.content_dsn,
        settings.recom_dsn,
        progress=False,
        **{**defaults, **options},  # type: ignore[arg-type]
    )


async def create_genre(conn: asyncpg.Connection, name: str) -> uuid.UUID:
    genre_id = uuid.uuid4()
    await conn.execute("INSERT INTO content.genre (id, name) VALUES ($1, $2)", genre_id, name)
    return genre_id


async def create_person(conn: asyncpg.Connection, full_name: str) -> uuid.UUID:
    person_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO content.person (id, full_name) VALUES ($1, $2)", person_id, full_name
    )
    return person_id


async def create_film(
    conn: asyncpg.Connection,
    title: str,
    *,
    year: int | None = None,
    genres: Sequence[uuid.UUID] = (),
    persons: Sequence[tuple[uuid.UUID, str]] = (),
) -> uuid.UUID:
    film_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO content.film_work (id, title, release_year) VALUES ($1, $2, $3)",
        film_id,
        title,
        year,
    )
    for genre_id in genres:
        await conn.execute(
            "INSERT INTO content.genre_film_work (film_work_id, genre_id) VALUES ($1, $2)",
            film_id,
            genre_id,
        )
    for person_id, role in persons:
        await conn.execute(
            "INSERT INTO content.person_film_work (film_work_id, person_id, role) "
            "VALUES ($1, $2, $3)",
            film_id,
            person_id,
            role,
        )
    return film_id
