"""Demo data: MovieLens-100K films into the content database (the ETL carries them on), ratings into recom."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from tqdm import tqdm

from contracts.app import configure_logging
from fastapi_recom import movielens
from fastapi_recom.config import Settings, get_settings
from fastapi_recom.etl import apply_content_schema

logger = logging.getLogger(__name__)

CHUNK = 10_000
# MovieLens marks films without a genre with this pseudo-genre; the catalogue leaves it out.
NO_GENRE = "unknown"

INSERT_GENRES = """
INSERT INTO content.genre (id, name) SELECT * FROM unnest($1::uuid[], $2::text[])
ON CONFLICT DO NOTHING
"""
INSERT_FILMS = """
INSERT INTO content.film_work (id, title, release_year, type)
SELECT id, title, year, 'movie' FROM unnest($1::uuid[], $2::text[], $3::int[]) AS f(id, title, year)
ON CONFLICT DO NOTHING
"""
# By genre name: the content database may already hold a genre of that name under another id.
INSERT_FILM_GENRES = """
INSERT INTO content.genre_film_work (film_work_id, genre_id)
SELECT n.film_work_id, g.id
FROM unnest($1::uuid[], $2::text[]) AS n(film_work_id, name)
JOIN content.genre AS g ON g.name = n.name
ON CONFLICT DO NOTHING
"""
# A viewer's own later rating of a demo film wins: demo rows never overwrite.
INSERT_RATINGS = """
INSERT INTO rating (user_id, movie_id, score, rated_at, deleted)
SELECT u, m, s, t, false FROM unnest($1::uuid[], $2::uuid[], $3::int2[], $4::timestamptz[])
    AS r(u, m, s, t)
ON CONFLICT DO NOTHING
"""


@dataclass
class DemoReport:
    films: int
    films_added: int
    ratings: int
    ratings_added: int


def _inserted(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def load_films(content: asyncpg.Connection, items: Sequence[movielens.Item]) -> int:
    """Films, genres and their links into the content database, in one transaction."""
    names = sorted({g for item in items for g in item.genres if g != NO_GENRE})
    links = [(movielens.movie_uuid(i.item_id), g) for i in items for g in i.genres if g != NO_GENRE]
    added = 0
    async with content.transaction():
        await content.execute(INSERT_GENRES, [movielens.genre_uuid(n) for n in names], names)
        with tqdm(total=len(items), unit="film", desc="demo films") as bar:
            for offset in range(0, len(items), CHUNK):
                chunk = items[offset : offset + CHUNK]
                status = await content.execute(
                    INSERT_FILMS,
                    [movielens.movie_uuid(i.item_id) for i in chunk],
                    [i.title for i in chunk],
                    [i.year for i in chunk],
                )
                added += _inserted(status)
                bar.update(len(chunk))
        await content.execute(INSERT_FILM_GENRES, [f for f, _ in links], [g for _, g in links])
    return added


async def load_ratings(
    recom: asyncpg.Connection, interactions: Sequence[movielens.Interaction]
) -> int:
    """Ratings into recom: uuid5 ids, stars 1..5 as scores 2..10, rated when MovieLens says."""
    added = 0
    async with recom.transaction():
        with tqdm(total=len(interactions), unit="rating", desc="demo ratings") as bar:
            for offset in range(0, len(interactions), CHUNK):
                chunk = interactions[offset : offset + CHUNK]
                status = await recom.execute(
                    INSERT_RATINGS,
                    [movielens.user_uuid(i.user_id) for i in chunk],
                    [movielens.movie_uuid(i.item_id) for i in chunk],
                    [movielens.to_score(i.rating) for i in chunk],
                    [datetime.fromtimestamp(i.timestamp, UTC) for i in chunk],
                )
                added += _inserted(status)
                bar.update(len(chunk))
    return added


async def load_demo(
    settings: Settings, *, data_dir: Path | None = None, force: bool = False
) -> DemoReport | None:
    """Load MovieLens-100K unless the content database already has films (or `force`).

    None when skipped. Idempotent: rows already there are left as they are.
    """
    await apply_content_schema(settings.content_dsn)
    content = await asyncpg.connect(settings.content_dsn, timeout=5)
    try:
        films = await content.fetchval("SELECT count(*) FROM content.film_work")
        if films and not force:
            logger.info(
                "the content database already holds %s films: demo data not loaded "
                "(`python -m fastapi_recom.demo --force` adds what is missing)",
                films,
            )
            return None
        if data_dir is None:
            data_dir = await asyncio.to_thread(movielens.fetch_dataset)
        items = movielens.read_items(data_dir)
        interactions = movielens.read_interactions(data_dir)
        # Ratings first: if this stops midway the catalogue is still empty, so the next run
        # loads again (and adds only what is missing).
        recom = await asyncpg.connect(settings.recom_dsn, timeout=5)
        try:
            ratings_added = await load_ratings(recom, interactions)
        finally:
            await recom.close()
        films_added = await load_films(content, items)
    finally:
        await content.close()
    report = DemoReport(len(items), films_added, len(interactions), ratings_added)
    logger.info(
        "demo data: %s films (%s new) in the content database, the ETL copies them into the "
        "catalogue; %s ratings (%s new) in recom; demo user (MovieLens user 1): %s",
        report.films,
        report.films_added,
        report.ratings,
        report.ratings_added,
        movielens.user_uuid("1"),
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="load even if films exist")
    parser.add_argument(
        "--data-dir", type=Path, help="a folder with ml-100k.item and ml-100k.inter to use"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        asyncio.run(load_demo(settings, data_dir=args.data_dir, force=args.force))
    except movielens.DatasetUnavailable as exc:
        # Not fatal: the suite runs with an empty catalogue, and this can be run again later.
        logger.warning(
            "MovieLens-100K demo data unavailable (%s). The suite starts with an empty "
            "catalogue; run `python -m fastapi_recom.demo` once the package index is reachable.",
            exc,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
