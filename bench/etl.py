"""Catalogue ETL benchmark: full load and incremental pass over 100,000 synthetic films with
500,000 person links, and freshness p95 (content change -> visible in GET /recom/v1/movies/{id}).

    .venv/bin/python -m bench.etl [--films 100000] [--samples 40] [--suffix _bench_etl]

Uses its own databases (content/recom + suffix), emptied first. Targets: full load >= 10,000
films/s; freshness p95 <= 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import time
import uuid

import asyncpg
import httpx

from bench import machine
from scripts import bootstrap

GENRES = 20
PERSONS_PER_FILM = 5  # a director, a writer, three actors


async def generate(content: asyncpg.Connection, films: int) -> tuple[list[uuid.UUID], int]:
    """Synthetic catalogue loaded with COPY; returns the film ids and the person-link count."""
    rng = random.Random(42)
    persons = max(films // 2, 10)
    genre_ids = [uuid.uuid4() for _ in range(GENRES)]
    person_ids = [uuid.uuid4() for _ in range(persons)]
    film_ids = [uuid.uuid4() for _ in range(films)]
    await content.copy_records_to_table(
        "genre",
        schema_name="content",
        columns=["id", "name"],
        records=[(g, f"Genre {n}") for n, g in enumerate(genre_ids)],
    )
    await content.copy_records_to_table(
        "person",
        schema_name="content",
        columns=["id", "full_name"],
        records=[(p, f"Person {n}") for n, p in enumerate(person_ids)],
    )
    await content.copy_records_to_table(
        "film_work",
        schema_name="content",
        columns=["id", "title", "description", "release_year", "rating"],
        records=[
            (f, f"Film {n}", f"Synthetic film number {n}.", 1920 + n % 100, (n % 100) / 10)
            for n, f in enumerate(film_ids)
        ],
    )
    genre_links = [
        (uuid.uuid4(), f, g) for f in film_ids for g in rng.sample(genre_ids, rng.randint(1, 3))
    ]
    await content.copy_records_to_table(
        "genre_film_work",
        schema_name="content",
        columns=["id", "film_work_id", "genre_id"],
        records=genre_links,
    )
    person_links = []
    for f in film_ids:
        cast = rng.sample(person_ids, 3)
        crew = rng.sample(person_ids, 2)
        person_links += [(uuid.uuid4(), f, p, "actor") for p in cast]
        person_links += [
            (uuid.uuid4(), f, crew[0], "director"),
            (uuid.uuid4(), f, crew[1], "writer"),
        ]
    await content.copy_records_to_table(
        "person_film_work",
        schema_name="content",
        columns=["id", "film_work_id", "person_id", "role"],
        records=person_links,
    )
    # As autovacuum would leave it: statistics and a visibility map for index-only scans.
    await content.execute("VACUUM ANALYZE")
    return film_ids, len(person_links)


async def freshness(
    content: asyncpg.Connection, base_url: str, film_ids: list[uuid.UUID], samples: int
) -> list[float]:
    """Seconds from a committed title change to the new title in the catalogue endpoint."""
    rng = random.Random(7)
    latencies = []
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        for n in range(samples):
            film = rng.choice(film_ids)
            title = f"Fresh {n} {uuid.uuid4().hex[:6]}"
            # Random phase against the ETL's interval.
            await asyncio.sleep(rng.uniform(0, 1))
            await content.execute(
                "UPDATE content.film_work SET title = $1 WHERE id = $2", title, film
            )
            changed = time.perf_counter()
            while True:
                response = await client.get(f"/recom/v1/movies/{film}")
                if response.status_code == 200 and response.json()["title"] == title:
                    break
                await asyncio.sleep(0.02)
            latencies.append(time.perf_counter() - changed)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def run(args: argparse.Namespace, env: dict[str, str]) -> None:
    # Imported after the environment is set: settings read it once.
    from fastapi_recom.config import get_settings
    from fastapi_recom.etl import CatalogueEtl, apply_content_schema
    from tests.support import ServiceProcess

    settings = get_settings()
    await apply_content_schema(settings.content_dsn)
    content = await asyncpg.connect(settings.content_dsn)
    recom = await asyncpg.connect(settings.recom_dsn)
    await content.execute(
        "TRUNCATE content.film_work, content.genre, content.person, content.genre_film_work, "
        "content.person_film_work, content.deleted_row"
    )
    await recom.execute("TRUNCATE movie, genre, person, movie_genre, movie_person, etl_state")
    await recom.execute("VACUUM ANALYZE movie")

    print(f"machine: {machine()}")
    started = time.perf_counter()
    film_ids, person_links = await generate(content, args.films)
    print(
        f"generated {len(film_ids):,} films, {person_links:,} person links "
        f"in {time.perf_counter() - started:.1f} s (COPY)"
    )

    etl = CatalogueEtl.from_settings(settings)
    # The last COPY must be older than the ETL's reporting margin to be read.
    await asyncio.sleep(etl.horizon_margin)
    started = time.perf_counter()
    report = await etl.run_once()
    full = time.perf_counter() - started
    print(
        f"full load: {report.films_loaded:,} films in {full:.2f} s = "
        f"{report.films_loaded / full:,.0f} films/s (target >= 10,000); rows read "
        f"{sum(report.rows_read.values()):,}; load average now {os.getloadavg()[0]:.1f}"
    )

    rng = random.Random(1)
    updated = rng.sample(film_ids, 1000)
    await content.execute(
        "UPDATE content.film_work SET rating = rating + 0.1 WHERE id = ANY($1::uuid[])", updated
    )
    await content.execute(
        "UPDATE content.person SET full_name = full_name || ' Jr.' WHERE full_name = 'Person 7'"
    )
    deleted = rng.sample(film_ids, 100)
    await content.execute("DELETE FROM content.film_work WHERE id = ANY($1::uuid[])", deleted)
    await asyncio.sleep(etl.horizon_margin)
    started = time.perf_counter()
    report = await etl.run_once()
    incremental = time.perf_counter() - started
    print(
        f"incremental pass (1,000 films updated, 1 person renamed, 100 films deleted): "
        f"{incremental:.2f} s; rows read {sum(report.rows_read.values()):,}, films loaded "
        f"{report.films_loaded:,}, deleted {report.films_deleted:,}"
    )
    started = time.perf_counter()
    await etl.run_once()
    print(f"idle pass (nothing changed): {(time.perf_counter() - started) * 1000:.1f} ms")
    await etl.close()

    service = ServiceProcess("fastapi_recom.main:app", "recom", env={**env, "ETL_ENABLED": "true"})
    await service.start()
    try:
        alive = [f for f in film_ids if f not in set(deleted)]
        latencies = await freshness(content, service.url, alive, args.samples)
    finally:
        service.stop()
    print(
        f"freshness over {len(latencies)} changes (ETL interval {settings.etl_interval:g} s): "
        f"p50 {statistics.median(latencies):.2f} s, p95 {percentile(latencies, 0.95):.2f} s, "
        f"max {max(latencies):.2f} s (target p95 <= 5 s)"
    )
    await content.close()
    await recom.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--films", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--suffix", default="_bench_etl")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bootstrap.ensure_env_file()
    env = {
        **bootstrap.test_environment(bootstrap.load_env()),
        "POSTGRES_DB_SUFFIX": args.suffix,
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    full_env = bootstrap.load_env()
    bootstrap.ensure_databases(full_env)
    bootstrap.migrate(full_env)
    asyncio.run(run(args, full_env))


if __name__ == "__main__":
    main()
