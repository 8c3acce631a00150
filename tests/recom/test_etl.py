"""The catalogue ETL against real PostgreSQL: incremental passes, late commits, restarts, outages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy.engine import make_url

from fastapi_recom.config import get_settings
from fastapi_recom.etl import CatalogueEtl, SourceUnavailable, _OpenTransactions
from fastapi_recom.main import app
from tests.recom.catalogue_support import (
    content,
    create_film,
    create_genre,
    create_person,
    make_etl,
    recom,
)
from tests.support import RefusingRole, TcpProxy, wait_for

__all__ = ["content", "recom"]  # fixtures


async def titles(recom: asyncpg.Connection) -> dict[uuid.UUID, str]:
    return {
        r["movie_id"]: r["title"] for r in await recom.fetch("SELECT movie_id, title FROM movie")
    }


async def genre_names(recom: asyncpg.Connection, movie_id: uuid.UUID) -> list[str]:
    rows = await recom.fetch(
        "SELECT g.name FROM movie_genre mg JOIN genre g USING (genre_id) "
        "WHERE mg.movie_id = $1 ORDER BY g.name",
        movie_id,
    )
    return [r["name"] for r in rows]


async def people(recom: asyncpg.Connection, movie_id: uuid.UUID) -> set[tuple[str, str]]:
    rows = await recom.fetch(
        "SELECT p.full_name, mp.role FROM movie_person mp JOIN person p USING (person_id) "
        "WHERE mp.movie_id = $1",
        movie_id,
    )
    return {(r["full_name"], r["role"]) for r in rows}


async def test_full_load_copies_films_genres_and_persons_when_catalogue_empty(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    drama = await create_genre(content, "Drama")
    comedy = await create_genre(content, "Comedy")
    lynch = await create_person(content, "David Lynch")
    dern = await create_person(content, "Laura Dern")
    film = await create_film(
        content,
        "Inland Empire",
        year=2006,
        genres=[drama, comedy],
        persons=[(lynch, "director"), (lynch, "writer"), (dern, "actor")],
    )
    other = await create_film(content, "Eraserhead", year=1977, genres=[drama])

    report = await make_etl(batch_size=2).run_once()

    assert await titles(recom) == {film: "Inland Empire", other: "Eraserhead"}
    assert await genre_names(recom, film) == ["Comedy", "Drama"]
    assert await people(recom, film) == {
        ("David Lynch", "director"),
        ("David Lynch", "writer"),
        ("Laura Dern", "actor"),
    }
    assert await recom.fetchval("SELECT release_year FROM movie WHERE movie_id = $1", film) == 2006
    assert report.rows_read == {
        "genre": 2,
        "person": 2,
        "film_work": 2,
        # Every film was copied whole from the origin: the links need no reading of their own.
        "genre_film_work": 0,
        "person_film_work": 0,
        "deleted_row": 0,
    }
    assert report.films_loaded == 2
    watermarks = await recom.fetch("SELECT source_table FROM etl_state ORDER BY source_table")
    assert [r["source_table"] for r in watermarks] == [
        "film_work",
        "genre",
        "genre_film_work",
        "person",
        "person_film_work",
    ]


async def test_incremental_pass_picks_up_inserts_updates_and_deletions_only(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    drama = await create_genre(content, "Drama")
    kept = await create_film(content, "Stalker", genres=[drama])
    renamed = await create_film(content, "Solaris (draft)", genres=[drama])
    doomed = await create_film(content, "The Mirror", genres=[drama])
    etl = make_etl()
    await etl.run_once()

    added = await create_film(content, "Nostalghia", genres=[drama])
    await content.execute("UPDATE content.film_work SET title = 'Solaris' WHERE id = $1", renamed)
    await content.execute("DELETE FROM content.film_work WHERE id = $1", doomed)
    report = await etl.run_once()

    assert await titles(recom) == {kept: "Stalker", renamed: "Solaris", added: "Nostalghia"}
    assert await recom.fetchval("SELECT count(*) FROM movie_genre WHERE movie_id = $1", doomed) == 0
    assert report.rows_read == {
        "genre": 0,
        "person": 0,
        "film_work": 2,
        "genre_film_work": 1,
        "person_film_work": 0,
        # The film and, through ON DELETE CASCADE, its genre link.
        "deleted_row": 2,
    }
    assert (report.films_loaded, report.films_deleted) == (2, 1)

    quiet = await etl.run_once()
    assert not quiet.changed
    assert quiet.films_loaded == 0
    await etl.close()


async def test_genre_rename_reloads_the_films_linked_to_it(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    scifi = await create_genre(content, "Sci-fi")
    drama = await create_genre(content, "Drama")
    linked = await create_film(content, "Alien", genres=[scifi, drama])
    unlinked = await create_film(content, "Amadeus", genres=[drama])
    etl = make_etl()
    await etl.run_once()
    before = await recom.fetchval("SELECT updated_at FROM movie WHERE movie_id = $1", linked)
    untouched = await recom.fetchval("SELECT updated_at FROM movie WHERE movie_id = $1", unlinked)

    await content.execute("UPDATE content.genre SET name = 'Science fiction' WHERE id = $1", scifi)
    report = await etl.run_once()

    assert await genre_names(recom, linked) == ["Drama", "Science fiction"]
    assert report.films_loaded == 1
    assert await recom.fetchval("SELECT updated_at FROM movie WHERE movie_id = $1", linked) > before
    assert (
        await recom.fetchval("SELECT updated_at FROM movie WHERE movie_id = $1", unlinked)
        == untouched
    )
    await etl.close()


async def test_person_rename_and_link_changes_reload_the_film(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    coen = await create_person(content, "Joel Coen")
    mcdormand = await create_person(content, "Frances McDormand")
    buscemi = await create_person(content, "Steve Buscemi")
    film = await create_film(
        content,
        "Fargo",
        persons=[(coen, "director"), (mcdormand, "actor"), (buscemi, "actor")],
    )
    etl = make_etl(batch_size=1)
    await etl.run_once()

    await content.execute(
        "UPDATE content.person SET full_name = 'Joel D. Coen' WHERE id = $1", coen
    )
    await content.execute(
        "UPDATE content.person_film_work SET role = 'writer' WHERE person_id = $1", mcdormand
    )
    await content.execute("DELETE FROM content.person_film_work WHERE person_id = $1", buscemi)
    report = await etl.run_once()

    assert await people(recom, film) == {
        ("Joel D. Coen", "director"),
        ("Frances McDormand", "writer"),
    }
    assert report.films_loaded == 1
    await etl.close()


async def test_deleted_genre_and_person_disappear_from_catalogue(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    noir = await create_genre(content, "Noir")
    drama = await create_genre(content, "Drama")
    bogart = await create_person(content, "Humphrey Bogart")
    film = await create_film(
        content, "The Big Sleep", genres=[noir, drama], persons=[(bogart, "actor")]
    )
    # One row a batch: each batch of the deletion log asks the source what is still alive.
    etl = make_etl(batch_size=1)
    await etl.run_once()

    await content.execute("DELETE FROM content.genre WHERE id = $1", noir)
    await content.execute("DELETE FROM content.person WHERE id = $1", bogart)
    report = await etl.run_once()

    assert await genre_names(recom, film) == ["Drama"]
    assert await people(recom, film) == set()
    assert await recom.fetchval("SELECT count(*) FROM genre WHERE genre_id = $1", noir) == 0
    assert await recom.fetchval("SELECT count(*) FROM person WHERE person_id = $1", bogart) == 0
    assert (report.genres_deleted, report.persons_deleted, report.films_loaded) == (1, 1, 1)
    await etl.close()


async def test_recreated_row_survives_its_older_deletion_log_entry(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    film = await create_film(content, "Vertigo")
    etl = make_etl()
    await etl.run_once()

    await content.execute("DELETE FROM content.film_work WHERE id = $1", film)
    await content.execute(
        "INSERT INTO content.film_work (id, title) VALUES ($1, 'Vertigo (restored)')", film
    )
    await etl.run_once()

    assert await titles(recom) == {film: "Vertigo (restored)"}
    await etl.close()


async def test_deleted_film_is_withdrawn_until_the_source_has_it_again(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    film = await create_film(content, "Andrei Rublev")
    never_loaded = uuid.uuid4()
    etl = make_etl()
    await etl.run_once()

    await content.execute("DELETE FROM content.film_work WHERE id = $1", film)
    report = await etl.run_once()
    assert report.films_deleted == 1
    assert await titles(recom) == {}
    assert await withdrawn(recom) == {film}

    await content.execute(
        "INSERT INTO content.film_work (id, title) VALUES ($1, 'Andrei Rublev (restored)')", film
    )
    # A film deleted before the catalogue ever had it is not withdrawn: there was nothing to take.
    await content.execute(
        "INSERT INTO content.film_work (id, title) VALUES ($1, 'Ivan''s Childhood')", never_loaded
    )
    await content.execute("DELETE FROM content.film_work WHERE id = $1", never_loaded)
    await etl.run_once()
    assert await titles(recom) == {film: "Andrei Rublev (restored)"}
    assert await withdrawn(recom) == set()
    await etl.close()


async def withdrawn(recom: asyncpg.Connection) -> set[uuid.UUID]:
    return {r[0] for r in await recom.fetch("SELECT movie_id FROM movie_withdrawn")}


async def test_row_committed_late_with_early_modified_is_picked_up(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    settings = get_settings()
    early = await create_film(content, "Committed before")
    slow = await asyncpg.connect(settings.content_dsn)
    etl = make_etl()
    try:
        transaction = slow.transaction()
        await transaction.start()
        late = uuid.uuid4()
        # The client asks for an early `modified`; the server stamps its transaction start.
        await slow.execute(
            "INSERT INTO content.film_work (id, title, modified) "
            "VALUES ($1, 'Committed late', '2000-01-01')",
            late,
        )
        after = await create_film(content, "Committed after, by another session")

        first = await etl.run_once()
        assert await titles(recom) == {early: "Committed before"}
        assert first.rows_read["film_work"] == 1
        watermark = await recom.fetchval(
            "SELECT watermark FROM etl_state WHERE source_table = 'film_work'"
        )
        late_modified = await slow.fetchval(
            "SELECT modified FROM content.film_work WHERE id = $1", late
        )
        assert watermark < late_modified

        await transaction.commit()
        second = await etl.run_once()
    finally:
        await slow.close()
        await etl.close()

    assert await titles(recom) == {
        early: "Committed before",
        late: "Committed late",
        after: "Committed after, by another session",
    }
    assert second.rows_read["film_work"] == 2


async def test_open_transaction_holding_the_horizon_is_reported_as_lagging(
    content: asyncpg.Connection,
) -> None:
    slow = await asyncpg.connect(get_settings().content_dsn)
    etl = make_etl(lag_alert=0.2)
    try:
        async with slow.transaction():
            await slow.execute("SELECT 1")
            await asyncio.sleep(0.4)
            await etl.run_once()
            assert etl.health().startswith("lagging: a transaction open for")
        await etl.run_once()
        assert etl.health() == "ok"
    finally:
        await slow.close()
        await etl.close()


@asynccontextmanager
async def content_role(admin: asyncpg.Connection, *, write: bool) -> AsyncIterator[str]:
    """The URL of a login role of the test's own on the content database, as the cinema's admin
    application (`write`) or a read-only ETL has: without pg_read_all_stats, so other roles'
    `xact_start` in pg_stat_activity is NULL to it."""
    rights = "SELECT, INSERT, UPDATE, DELETE" if write else "SELECT"
    async with RefusingRole(get_settings().content_dsn, schema="content", rights=rights) as role:
        assert not await admin.fetchval(
            "SELECT pg_has_role($1, 'pg_read_all_stats', 'MEMBER')", role.name
        )
        yield role.url


@asynccontextmanager
async def etl_blind_to_writer(
    admin: asyncpg.Connection,
) -> AsyncIterator[tuple[CatalogueEtl, asyncpg.Connection]]:
    """An ETL and a writer session (the admin application's), each with a role of its own: the
    writer's transaction start is hidden from the ETL."""
    async with (
        content_role(admin, write=True) as writer_url,
        content_role(admin, write=False) as reader_url,
    ):
        etl = make_etl(reader_url)
        writer = await asyncpg.connect(writer_url)
        try:
            yield etl, writer
        finally:
            await writer.close()
            await etl.close()


async def test_late_commit_of_another_role_reaches_catalogue_when_etl_cannot_see_its_start(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    edited = await create_film(content, "Draft title")
    doomed = await create_film(content, "Withdrawn by the slow editor")
    gone_meanwhile = await create_film(content, "Withdrawn meanwhile")
    async with etl_blind_to_writer(content) as (etl, slow):
        await etl.run_once()
        transaction = slow.transaction()
        await transaction.start()
        # Stamped with this transaction's start (`modified := now()`).
        await slow.execute(
            "UPDATE content.film_work SET title = 'Final title' WHERE id = $1", edited
        )
        await slow.execute("DELETE FROM content.film_work WHERE id = $1", doomed)
        # Committed while the slow editor works: newer (modified, id) in both tables.
        added = await create_film(content, "Committed meanwhile")
        await content.execute("DELETE FROM content.film_work WHERE id = $1", gone_meanwhile)
        await etl.run_once()

        await transaction.commit()
        await etl.run_once()

    catalogue = (await titles(recom), await withdrawn(recom))
    assert catalogue == (
        {edited: "Final title", added: "Committed meanwhile"},
        {doomed, gone_meanwhile},
    )


async def test_transaction_open_before_the_first_pass_holds_back_an_etl_that_cannot_see_it(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    before = await create_film(content, "Committed before")
    async with etl_blind_to_writer(content) as (etl, slow):
        transaction = slow.transaction()
        await transaction.start()
        late = uuid.uuid4()
        await slow.execute(
            "INSERT INTO content.film_work (id, title) VALUES ($1, 'Committed late')", late
        )
        after = await create_film(content, "Committed after")
        # Nothing tells this ETL when the slow transaction started: it reads nothing yet.
        first = await etl.run_once()

        await transaction.commit()
        await etl.run_once()

    assert await titles(recom) == {
        before: "Committed before",
        late: "Committed late",
        after: "Committed after",
    }
    assert not first.changed


def test_unseen_transaction_is_bounded_by_the_newest_sample_without_it() -> None:
    at = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=n) for n in range(5)]
    watch = _OpenTransactions()
    # Open in every sample so far: its start is unknown.
    assert watch.oldest_start(at[0], ["1/1"], ["1/1"]) is None
    assert watch.oldest_start(at[1], ["1/1", "2/1"], ["1/1", "2/1"]) is None
    # 2/1 was missing from the first sample, 3/1 from the second.
    assert watch.oldest_start(at[2], ["2/1", "3/1"], ["2/1", "3/1"]) == at[0]
    # Samples no open transaction needs are dropped; the one bounding 2/1 stays.
    assert watch.oldest_start(at[3], ["2/1"], ["2/1"]) == at[0]
    assert watch.oldest_start(at[4], ["4/1"], ["4/1"]) == at[3]
    # Nothing open, or only transactions whose start is visible: the sample's own time.
    assert watch.oldest_start(at[4], ["5/1"], []) == at[4]


async def test_restart_resumes_from_saved_watermarks(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    first = await create_film(content, "Ran")
    etl = make_etl()
    await etl.run_once()
    await etl.close()

    second = await create_film(content, "Kagemusha")
    restarted = make_etl()
    report = await restarted.run_once()
    await restarted.close()

    assert report.rows_read["film_work"] == 1
    assert report.films_loaded == 1
    assert await titles(recom) == {first: "Ran", second: "Kagemusha"}


class CrashingEtl(CatalogueEtl):
    """Dies inside the transaction of its third film batch, after loading it."""

    batches = 0

    async def _write_films(self, *args: object, **kwargs: object) -> None:
        await super()._write_films(*args, **kwargs)  # type: ignore[arg-type]
        self.batches += 1
        if self.batches == 3:
            raise RuntimeError("crash")


async def test_crash_midway_loses_and_duplicates_nothing(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    films = [await create_film(content, f"Part {n}") for n in range(5)]
    settings = get_settings()
    crashing = CrashingEtl(
        settings.content_dsn, settings.recom_dsn, batch_size=2, horizon_margin=0, progress=False
    )
    with pytest.raises(RuntimeError, match="crash"):
        await crashing.run_once()
    await crashing.close()
    # The two committed batches, and nothing of the third.
    assert await recom.fetchval("SELECT count(*) FROM movie") == 4

    resumed = make_etl(batch_size=2)
    report = await resumed.run_once()
    await resumed.close()

    assert report.rows_read["film_work"] == 1
    assert report.films_loaded == 1
    assert set(await titles(recom)) == set(films)


async def test_unreachable_source_is_retried_and_reported_not_fatal(
    content: asyncpg.Connection, recom: asyncpg.Connection
) -> None:
    settings = get_settings()
    url = make_url(settings.content_dsn)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    etl = make_etl(proxied, interval=0.05, max_backoff=0.3)
    task = asyncio.create_task(etl.run_forever())
    try:
        await wait_for(lambda: _is(etl, "ok"), timeout=10)
        await proxy.cut()
        film = await create_film(content, "Blackout")

        async def unreachable() -> bool:
            return etl.health().startswith("source unreachable")

        await wait_for(unreachable, timeout=10)
        async with (
            LifespanManager(app) as manager,
            AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://t") as client,
        ):
            app.state.etl = etl

            async def others_up() -> bool:
                checks = (await client.get("/recom/ready")).json()["checks"]
                return all(v == "ok" for k, v in checks.items() if k != "etl")

            await wait_for(others_up, timeout=15)
            ready = await client.get("/recom/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ok"
        assert ready.json()["checks"]["etl"].startswith("source unreachable")
        failures = etl.failures
        await wait_for(lambda: _value(etl.failures > failures + 1), timeout=10)
        assert not task.done()

        await proxy.restore()

        async def loaded() -> bool:
            return film in await titles(recom) and etl.health() == "ok"

        await wait_for(loaded, timeout=10)
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await etl.close()
        await proxy.close()


async def test_missing_content_schema_is_reported_as_source_unreachable(
    recom: asyncpg.Connection,
) -> None:
    url = make_url(get_settings().content_dsn).set(database="postgres")
    etl = make_etl(url.render_as_string(hide_password=False))
    with pytest.raises(SourceUnavailable, match="UndefinedTableError"):
        await etl.run_once()
    await etl.close()


async def _is(etl: CatalogueEtl, health: str) -> bool:
    return etl.health() == health


async def _value(condition: bool) -> bool:
    return condition
