"""The ETL that keeps recom's catalogue (movie, genre, person, links) in step with the content database."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from tqdm import tqdm

from contracts.app import Degraded
from fastapi_recom.config import Settings

logger = logging.getLogger(__name__)

CONTENT_SCHEMA = Path(__file__).with_name("content_schema.sql")

# Source tables in the order a pass reads them: genres and persons first, so that the films
# reloaded later find them; the deletion log last.
TABLES = ("genre", "person", "film_work", "genre_film_work", "person_film_work", "deleted_row")
LINK_TABLES = ("genre_film_work", "person_film_work")

# Below every real (modified, id): where a table without a saved watermark starts.
ORIGIN = (datetime(1, 1, 1, tzinfo=UTC), uuid.UUID(int=0))

# Seconds a new transaction may take to show in pg_locks after its start time (see
# OPEN_TRANSACTIONS below); generous, as it only delays changes by this much.
REPORTING_MARGIN = 1.0

# Only one recom replica runs the ETL at a time (a session-level advisory lock in recom's DB).
LOCK_KEY = 0x5EC0_E71

# Late commits: each pass reads only rows with `modified` below the horizon, a time before the
# start of every transaction still open in the content database, taken in its own statement
# before any data; so the (modified, id) keyset never skips a late commit and never rereads a
# table. A bare `now() - safety lag` would lose rows of transactions longer than the lag.
#
# The horizon needs no privilege. pg_stat_activity hides `xact_start` of other roles' sessions
# (unless the ETL's role has pg_read_all_stats), and the content database's writers use a role
# of their own. Snapshots (pg_current_snapshot) do not help either: a transaction gets its txid
# at its first write, possibly long after the start that stamps its `modified`. But every
# transaction holds a lock on its own virtual transaction id from its start, and pg_locks shows
# those to everyone. So each pass notes the open virtual ids: a transaction open now that an
# earlier pass did not see started after that pass (`_OpenTransactions`); one open since before
# this ETL's first pass holds the horizon where it is until it ends. Where `xact_start` is
# visible it is used as is. VACUUM (never inside a transaction block) holds nothing back. The
# price: a transaction left open in the content database holds the ETL back, which /ready
# reports as lagging; prepared (two-phase) transactions are not seen.
OPEN_TRANSACTIONS = """
WITH open AS (
    SELECT l.virtualtransaction AS vxid, a.xact_start
    FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.locktype = 'virtualxid' AND l.virtualxid = l.virtualtransaction
      AND a.datname = current_database() AND l.pid <> pg_backend_pid()
      AND coalesce(a.backend_type, 'client backend') = 'client backend'
      AND l.pid NOT IN (SELECT pid FROM pg_stat_progress_vacuum)
)
SELECT statement_timestamp() AS taken, clock_timestamp() AS now,
    coalesce(array_agg(vxid), '{}') AS open,
    coalesce(array_agg(vxid) FILTER (WHERE xact_start IS NULL), '{}') AS unseen,
    min(xact_start) AS oldest_seen
FROM open
"""

KEYSET = " WHERE (modified, id) > ($1, $2) AND modified < $3 ORDER BY modified, id LIMIT $4"
EXTRACT = {
    "genre": "SELECT id, modified, name, description FROM content.genre",
    "person": "SELECT id, modified, full_name FROM content.person",
    "film_work": (
        "SELECT id, modified, title, description, release_year, rating, type FROM content.film_work"
    ),
    "genre_film_work": "SELECT id, modified, film_work_id FROM content.genre_film_work",
    "person_film_work": "SELECT id, modified, film_work_id FROM content.person_film_work",
    "deleted_row": (
        "SELECT id, modified, table_name, row_id, film_work_id FROM content.deleted_row"
    ),
}

SOURCE_FILMS = """
SELECT id, title, description, release_year, rating, type, modified
FROM content.film_work WHERE id = ANY($1::uuid[])
"""
SOURCE_FILM_GENRES = """
SELECT gfw.film_work_id, g.id, g.name, g.description, g.modified
FROM content.genre_film_work AS gfw JOIN content.genre AS g ON g.id = gfw.genre_id
WHERE gfw.film_work_id = ANY($1::uuid[])
"""
SOURCE_FILM_PERSONS = """
SELECT film_work_id, person_id, role FROM content.person_film_work
WHERE film_work_id = ANY($1::uuid[])
"""
SOURCE_PERSONS = """
SELECT id, full_name, modified FROM content.person WHERE id = ANY($1::uuid[]) AND modified >= $2
"""

# Genres and persons: the table's own pass writes names (DO UPDATE); a film reload only makes
# sure the rows its links point at exist (DO NOTHING), without locking or rewriting them.
UPSERT_GENRES = """
INSERT INTO genre (genre_id, name, description, source_modified_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
ON CONFLICT (genre_id) DO {}
"""
GENRE_UPDATE = """UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description,
    source_modified_at = EXCLUDED.source_modified_at"""
UPSERT_PERSONS = """
INSERT INTO person (person_id, full_name, source_modified_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[])
ON CONFLICT (person_id) DO {}
"""
PERSON_UPDATE = """UPDATE SET full_name = EXCLUDED.full_name,
    source_modified_at = EXCLUDED.source_modified_at"""
UPSERT_MOVIES = """
INSERT INTO movie (movie_id, title, description, release_year, rating, type, source_modified_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::float8[], $6::text[],
                     $7::timestamptz[])
ON CONFLICT (movie_id) DO UPDATE SET title = EXCLUDED.title,
    description = EXCLUDED.description, release_year = EXCLUDED.release_year,
    rating = EXCLUDED.rating, type = EXCLUDED.type,
    source_modified_at = EXCLUDED.source_modified_at, updated_at = clock_timestamp()
"""
# A film the source deleted leaves the catalogue for `movie_withdrawn` (recom stops picking it);
# one the source has again leaves `movie_withdrawn`.
WITHDRAW_MOVIES = """
WITH gone AS (DELETE FROM movie WHERE movie_id = ANY($1::uuid[]) RETURNING movie_id)
INSERT INTO movie_withdrawn (movie_id) SELECT movie_id FROM gone
ON CONFLICT (movie_id) DO UPDATE SET withdrawn_at = clock_timestamp()
"""
RETURN_MOVIES = "DELETE FROM movie_withdrawn WHERE movie_id = ANY($1::uuid[])"
# Links of the reloaded films are replaced (deleted, then COPYed in): far cheaper than
# per-row ON CONFLICT checks, and a reloaded film has only a handful of links.
DELETE_MOVIE_GENRES = "DELETE FROM movie_genre WHERE movie_id = ANY($1::uuid[])"
DELETE_MOVIE_PERSONS = "DELETE FROM movie_person WHERE movie_id = ANY($1::uuid[])"
SAVE_WATERMARK = """
INSERT INTO etl_state (source_table, watermark, last_id) VALUES ($1, $2, $3)
ON CONFLICT (source_table) DO UPDATE SET watermark = EXCLUDED.watermark,
    last_id = EXCLUDED.last_id, updated_at = clock_timestamp()
"""

# What a broken or missing content database looks like to asyncpg.
SOURCE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidSchemaNameError,
    asyncpg.UndefinedTableError,
    asyncpg.InvalidAuthorizationSpecificationError,
)


class SourceUnavailable(Exception):
    """The content database cannot be reached, or has no `content` schema yet."""


@contextmanager
def _source_errors() -> Iterator[None]:
    try:
        yield
    except SOURCE_ERRORS as exc:
        raise SourceUnavailable(f"{type(exc).__name__}: {exc}") from exc


@dataclass
class PassReport:
    """What one pass did (counts of rows written to recom's catalogue)."""

    rows_read: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    films_loaded: int = 0
    films_deleted: int = 0
    genres_written: int = 0
    persons_written: int = 0
    genres_deleted: int = 0
    persons_deleted: int = 0
    standby: bool = False

    @property
    def changed(self) -> bool:
        return any(self.rows_read.values())


@dataclass
class _Pass:
    """State of one pass: its horizon and the films already reloaded during it."""

    horizon: datetime
    report: PassReport
    # A film reloaded in this pass already reflects every row below the horizon.
    reloaded: set[uuid.UUID] = field(default_factory=set)
    # Tables read up to the horizon in this pass.
    drained: set[str] = field(default_factory=set)
    progress: tqdm[Any] | None = None


@dataclass(frozen=True, eq=False)
class _Sample:
    """The virtual ids of the transactions open in the content database at `taken`."""

    taken: datetime
    open: frozenset[str]


class _OpenTransactions:
    """Lower bounds of open transactions' starts from the passes' samples (see OPEN_TRANSACTIONS).

    Virtual ids are never reused while the server runs (PostgreSQL keeps each backend slot's
    counter), so an id open now and missing from an earlier sample started after that sample.
    After a server restart an old id may come back: it then finds an older sample, which only
    holds the horizon back further."""

    def __init__(self) -> None:
        self._samples: list[_Sample] = []

    @property
    def first_taken(self) -> datetime | None:
        return self._samples[0].taken if self._samples else None

    def oldest_start(
        self, taken: datetime, open_now: Sequence[str], unseen: Sequence[str]
    ) -> datetime | None:
        """At or before the start of each transaction in `unseen` (all open at `taken`); None if
        one was open in every sample so far. Records this sample."""
        oldest: datetime | None = taken
        keep: list[_Sample] = []
        for vxid in unseen:
            since = next((s for s in reversed(self._samples) if vxid not in s.open), None)
            if since is None:
                oldest = None
            elif oldest is not None:
                oldest = min(oldest, since.taken)
            if since is not None and since not in keep:
                keep.append(since)
        # Only the samples that bound an open transaction can bound it again; a transaction that
        # opens later is missing from this one. The first stays for how long a hold lasted.
        first = self._samples[:1]
        self._samples = [s for s in self._samples if s in keep or s in first]
        self._samples.append(_Sample(taken, frozenset(open_now)))
        return oldest


class CatalogueEtl:
    """Incremental copy of the content database into recom's catalogue tables."""

    def __init__(
        self,
        source_dsn: str,
        target_dsn: str,
        *,
        batch_size: int = 10_000,
        interval: float = 2.0,
        max_backoff: float = 60.0,
        lag_alert: float = 60.0,
        horizon_margin: float = REPORTING_MARGIN,
        progress: bool = True,
    ) -> None:
        self.source_dsn = source_dsn
        self.target_dsn = target_dsn
        self.batch_size = batch_size
        self.interval = interval
        self.max_backoff = max_backoff
        self.lag_alert = lag_alert
        self.horizon_margin = horizon_margin
        self.progress = progress
        self._source: asyncpg.Connection | None = None
        self._target: asyncpg.Connection | None = None
        self._last_success: float | None = None
        self._horizon_lag = 0.0
        # The newest horizon found safe: every transaction that started before it has ended.
        self._horizon = ORIGIN[0]
        self._open = _OpenTransactions()
        self._told_unseen = False
        self._problem: str | None = None
        self._retry_at = 0.0
        self._standby = False
        self.failures = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> CatalogueEtl:
        return cls(
            settings.content_dsn,
            settings.recom_dsn,
            batch_size=settings.etl_batch_size,
            interval=settings.etl_interval,
            max_backoff=settings.etl_max_backoff,
            lag_alert=settings.etl_lag_alert,
        )

    # ------------------------------------------------------------ the loop and its health

    async def run_forever(self) -> None:
        """A pass every `interval` seconds; exponential backoff while something is down."""
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                self.failures += 1
                delay = min(self.interval * 2**self.failures, self.max_backoff)
                kind = "source unreachable" if isinstance(exc, SourceUnavailable) else "failing"
                self._problem = f"{kind} ({exc})"[:300]
                self._retry_at = time.monotonic() + delay
                logger.warning("catalogue ETL %s; retrying in %.1f s", self._problem, delay)
                await self.close()
                await asyncio.sleep(delay)
                continue
            if self._problem is not None:
                logger.info("catalogue ETL recovered after %s failed attempts", self.failures)
            self._problem = None
            self.failures = 0
            await asyncio.sleep(self.interval)

    def health(self) -> str:
        """Either "ok" or a `Degraded` description, which /recom/ready shows without failing."""
        now = time.monotonic()
        if self._problem is not None:
            wait = max(0.0, self._retry_at - now)
            return Degraded(f"{self._problem}; retrying in {wait:.0f} s")
        if self._standby:
            return Degraded("standby: another recom instance runs the ETL")
        if self._last_success is None:
            return Degraded("starting: first pass in progress")
        if now - self._last_success > self.lag_alert:
            return Degraded(f"lagging: last pass {now - self._last_success:.0f} s ago")
        if self._horizon_lag > self.lag_alert:
            return Degraded(
                f"lagging: a transaction open for {self._horizon_lag:.0f} s in the content "
                "database holds the ETL back"
            )
        return "ok"

    async def close(self) -> None:
        for conn in (self._source, self._target):
            if conn is not None:
                with suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=2)
        self._source = self._target = None

    # ------------------------------------------------------------ one pass

    async def run_once(self) -> PassReport:
        """Read every table up to the horizon, in batches, each loaded in one transaction."""
        started = time.perf_counter()
        source, target = await self._connect()
        report = PassReport()
        if not await target.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            self._standby = True
            report.standby = True
            return report
        self._standby = False
        try:
            with _source_errors():
                horizon, lag = self._next_horizon(await source.fetchrow(OPEN_TRANSACTIONS))
            state = {
                r["source_table"]: (r["watermark"], r["last_id"])
                for r in await target.fetch(
                    "SELECT source_table, watermark, last_id FROM etl_state"
                )
            }
            run = _Pass(horizon=horizon, report=report)
            if "film_work" not in state and self.progress:
                with _source_errors():
                    total = await source.fetchval("SELECT count(*) FROM content.film_work")
                if total:
                    logger.info("catalogue ETL: first full load of %s films", total)
                    run.progress = tqdm(total=total, unit="film", desc="catalogue full load")
            try:
                for table in TABLES:
                    start = state.get(table) or ORIGIN
                    if (
                        table in LINK_TABLES
                        and "film_work" not in state
                        and start < (horizon, ORIGIN[1])
                    ):
                        # Films read from the origin: every film below the horizon was reloaded
                        # whole in this pass, so the links below it carry nothing new.
                        await target.execute(SAVE_WATERMARK, table, horizon, ORIGIN[1])
                        continue
                    await self._drain(source, target, table, start, run)
            finally:
                if run.progress is not None:
                    run.progress.close()
        finally:
            await target.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        self._last_success = time.monotonic()
        self._horizon_lag = lag
        if report.changed:
            logger.info(
                "catalogue ETL pass in %.2f s: read %s; films loaded %s, deleted %s; "
                "genres written %s, deleted %s; persons written %s, deleted %s",
                time.perf_counter() - started,
                {k: v for k, v in report.rows_read.items() if v},
                report.films_loaded,
                report.films_deleted,
                report.genres_written,
                report.genres_deleted,
                report.persons_written,
                report.persons_deleted,
            )
        return report

    def _next_horizon(self, sample: asyncpg.Record) -> tuple[datetime, float]:
        """This pass's horizon from its OPEN_TRANSACTIONS sample, and how many seconds open
        transactions hold it behind the sample."""
        if sample["unseen"] and not self._told_unseen:
            self._told_unseen = True
            logger.info(
                "catalogue ETL: the content database hides other roles' transaction starts from "
                "this role; it bounds them by its own passes instead, so a transaction open "
                "before its first pass holds it back until that transaction ends (GRANT "
                "pg_read_all_stats TO the ETL's role to see them)"
            )
        oldest = self._open.oldest_start(sample["taken"], sample["open"], sample["unseen"])
        if oldest is not None:
            horizon = oldest - timedelta(seconds=self.horizon_margin)
            if sample["oldest_seen"] is not None:
                horizon = min(horizon, sample["oldest_seen"])
            self._horizon = max(self._horizon, horizon)
        # Before this ETL first moved its horizon, a hold is known to last since its first sample.
        if self._horizon > ORIGIN[0]:
            held_from = self._horizon + timedelta(seconds=self.horizon_margin)
        else:
            held_from = self._open.first_taken or sample["now"]
        return self._horizon, max(0.0, (sample["now"] - held_from).total_seconds())

    async def _connect(self) -> tuple[asyncpg.Connection, asyncpg.Connection]:
        if self._source is None or self._source.is_closed():
            with _source_errors():
                self._source = await asyncpg.connect(self.source_dsn, timeout=3, command_timeout=60)
        if self._target is None or self._target.is_closed():
            self._target = await asyncpg.connect(
                self.target_dsn,
                timeout=3,
                command_timeout=60,
                # A commit the server loses in a crash loses its watermark with it, so the
                # batch is simply read again: no need to wait for each WAL flush.
                server_settings={"synchronous_commit": "off"},
            )
        return self._source, self._target

    async def _drain(
        self,
        source: asyncpg.Connection,
        target: asyncpg.Connection,
        table: str,
        start: tuple[datetime, uuid.UUID],
        run: _Pass,
    ) -> None:
        """Every batch of `table` below the horizon; the watermark commits with each batch.

        Film batches are read one ahead: the source reads the next batch while recom writes
        this one (the two servers work in parallel). Other tables' writes use the source
        connection themselves, so they read in turn.
        """
        pending: asyncio.Future[tuple[list[asyncpg.Record], _Films | None]] | None
        pending = asyncio.ensure_future(self._read_batch(source, table, start, run))
        try:
            while pending is not None:
                rows, films = await pending
                pending = None
                if not rows:
                    break
                after = None
                if len(rows) == self.batch_size:
                    after = (rows[-1]["modified"], rows[-1]["id"])
                if after is not None and table == "film_work":
                    pending = asyncio.ensure_future(self._read_batch(source, table, after, run))
                async with target.transaction():
                    touched = await self._apply(source, target, table, rows, run.report)
                    if films is not None:
                        await self._write_films(target, films, run)
                    else:
                        await self._reload(source, target, touched - run.reloaded, run)
                    await target.execute(
                        SAVE_WATERMARK, table, rows[-1]["modified"], rows[-1]["id"]
                    )
                run.reloaded |= touched
                run.report.rows_read[table] += len(rows)
                if after is not None and pending is None:
                    pending = asyncio.ensure_future(self._read_batch(source, table, after, run))
        finally:
            if pending is not None:
                pending.cancel()
                with suppress(BaseException):
                    await pending
        run.drained.add(table)

    async def _read_batch(
        self,
        source: asyncpg.Connection,
        table: str,
        after: tuple[datetime, uuid.UUID],
        run: _Pass,
    ) -> tuple[list[asyncpg.Record], _Films | None]:
        """The next batch of `table` and, for films, their whole copy from the source."""
        with _source_errors():
            rows = await source.fetch(EXTRACT[table] + KEYSET, *after, run.horizon, self.batch_size)
        if table != "film_work" or not rows:
            return rows, None
        fresh = [r for r in rows if r["id"] not in run.reloaded]
        return rows, await self._fetch_films(source, [r["id"] for r in fresh], run, fresh)

    async def _apply(
        self,
        source: asyncpg.Connection,
        target: asyncpg.Connection,
        table: str,
        rows: Sequence[asyncpg.Record],
        report: PassReport,
    ) -> set[uuid.UUID]:
        """Write what the batch itself carries; return the films whose copy it makes stale."""
        if table == "genre":
            await _write_genres(target, rows, update=True)
            report.genres_written += len(rows)
            return await _films_linked(target, "movie_genre", "genre_id", [r["id"] for r in rows])
        if table == "person":
            await _write_persons(target, rows, update=True)
            report.persons_written += len(rows)
            return await _films_linked(target, "movie_person", "person_id", [r["id"] for r in rows])
        if table == "film_work":
            return {r["id"] for r in rows}
        if table in LINK_TABLES:
            return {r["film_work_id"] for r in rows}
        films = {r["row_id"] for r in rows if r["table_name"] == "film_work"}
        films |= {r["film_work_id"] for r in rows if r["table_name"] in LINK_TABLES}
        linked, deleted = await _delete_gone(source, target, "genre", rows)
        films |= linked
        report.genres_deleted += deleted
        linked, deleted = await _delete_gone(source, target, "person", rows)
        report.persons_deleted += deleted
        return films | linked

    async def _reload(
        self,
        source: asyncpg.Connection,
        target: asyncpg.Connection,
        films: set[uuid.UUID],
        run: _Pass,
    ) -> None:
        """Copy these films whole (row, genres, persons) from the source, in chunks."""
        ids = list(films)
        for offset in range(0, len(ids), self.batch_size):
            await self._write_films(
                target,
                await self._fetch_films(source, ids[offset : offset + self.batch_size], run),
                run,
            )

    async def _fetch_films(
        self,
        source: asyncpg.Connection,
        ids: list[uuid.UUID],
        run: _Pass,
        rows: list[asyncpg.Record] | None = None,
    ) -> _Films:
        """Films with their links, and the genres and persons recom may lack for them.

        `rows` (film rows the batch read already) come from an earlier snapshot than the
        links; both were taken after the horizon was fixed, so whatever differs between them
        committed after it, carries a `modified` at or above it, and is read again next pass.
        """
        # Once this pass has drained the genre (person) table, every genre (person) below the
        # horizon is in recom already: only newer ones need writing for the links to hold.
        floor = {
            table: run.horizon if table in run.drained else ORIGIN[0]
            for table in ("genre", "person")
        }
        with _source_errors():
            async with source.transaction(isolation="repeatable_read", readonly=True):
                if rows is None:
                    rows = await source.fetch(SOURCE_FILMS, ids)
                genres = await source.fetch(SOURCE_FILM_GENRES, ids)
                person_links = await source.fetch(SOURCE_FILM_PERSONS, ids)
                persons = await source.fetch(
                    SOURCE_PERSONS,
                    list({r["person_id"] for r in person_links}),
                    floor["person"],
                )
        return _Films(
            ids=ids,
            rows=rows,
            genre_links=genres,
            genres=[
                r for r in {r["id"]: r for r in genres}.values() if r["modified"] >= floor["genre"]
            ],
            person_links=person_links,
            persons=persons,
        )

    async def _write_films(self, target: asyncpg.Connection, films: _Films, run: _Pass) -> None:
        if not films.ids:
            return
        await _write_genres(target, films.genres, update=False)
        await _write_persons(target, films.persons, update=False)
        await target.execute(UPSERT_MOVIES, *_columns(films.rows, MOVIE_COLUMNS))
        found_ids = [r["id"] for r in films.rows]
        await target.execute(RETURN_MOVIES, found_ids)
        missing = list(set(films.ids).difference(found_ids))
        deleted = _count(await target.execute(WITHDRAW_MOVIES, missing)) if missing else 0
        await target.execute(DELETE_MOVIE_GENRES, films.ids)
        await target.copy_records_to_table(
            "movie_genre",
            columns=("movie_id", "genre_id"),
            records=[(r["film_work_id"], r["id"]) for r in films.genre_links],
        )
        await target.execute(DELETE_MOVIE_PERSONS, films.ids)
        await target.copy_records_to_table(
            "movie_person",
            columns=("movie_id", "person_id", "role"),
            records=[(r["film_work_id"], r["person_id"], r["role"]) for r in films.person_links],
        )
        run.report.films_loaded += len(found_ids)
        run.report.films_deleted += deleted
        if run.progress is not None:
            run.progress.update(len(found_ids))


@dataclass
class _Films:
    """Some films as one source snapshot shows them: rows, genre links, person links."""

    ids: list[uuid.UUID]
    rows: list[asyncpg.Record]
    genre_links: list[asyncpg.Record]
    genres: list[asyncpg.Record]
    person_links: list[asyncpg.Record]
    persons: list[asyncpg.Record]


MOVIE_COLUMNS = ("id", "title", "description", "release_year", "rating", "type", "modified")


def _columns(rows: Sequence[asyncpg.Record], names: Sequence[str]) -> list[list[Any]]:
    """Row records as one list per column, for `unnest($1, $2, ...)`."""
    return [[r[name] for r in rows] for name in names]


def _count(status: str) -> int:
    """The row count of a command tag such as `DELETE 3`."""
    return int(status.rsplit(" ", 1)[-1])


async def _write_genres(
    target: asyncpg.Connection, rows: Sequence[asyncpg.Record], *, update: bool
) -> None:
    if rows:
        sql = UPSERT_GENRES.format(GENRE_UPDATE if update else "NOTHING")
        await target.execute(sql, *_columns(rows, ("id", "name", "description", "modified")))


async def _write_persons(
    target: asyncpg.Connection, rows: Sequence[asyncpg.Record], *, update: bool
) -> None:
    if rows:
        sql = UPSERT_PERSONS.format(PERSON_UPDATE if update else "NOTHING")
        await target.execute(sql, *_columns(rows, ("id", "full_name", "modified")))


async def _delete_gone(
    source: asyncpg.Connection,
    target: asyncpg.Connection,
    name: str,
    rows: Sequence[asyncpg.Record],
) -> tuple[set[uuid.UUID], int]:
    """Delete the genres (or persons) the log names and the source no longer has; return the
    films that were linked to them and how many went."""
    ids = list({r["row_id"] for r in rows if r["table_name"] == name})
    if not ids:
        return set(), 0
    # The log is a hint, the source decides: a row deleted and then re-created stays.
    with _source_errors():
        alive = await source.fetch(f"SELECT id FROM content.{name} WHERE id = ANY($1::uuid[])", ids)
    gone = list(set(ids) - {r["id"] for r in alive})
    key = f"{name}_id"
    films = await _films_linked(target, f"movie_{name}", key, gone)
    await target.execute(f"DELETE FROM movie_{name} WHERE {key} = ANY($1::uuid[])", gone)
    status = await target.execute(f"DELETE FROM {name} WHERE {key} = ANY($1::uuid[])", gone)
    return films, _count(status)


async def _films_linked(
    target: asyncpg.Connection, link_table: str, key: str, ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Films of recom's catalogue linked to these genres or persons."""
    if not ids:
        return set()
    rows = await target.fetch(
        f"SELECT DISTINCT movie_id FROM {link_table} WHERE {key} = ANY($1::uuid[])",
        list(ids),
    )
    return {r["movie_id"] for r in rows}


async def apply_content_schema(dsn: str) -> None:
    """Create the content database's schema (idempotent): for the demo, the tests, the bench."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        # Serialises concurrent appliers: CREATE ... IF NOT EXISTS is not race-free.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            await conn.execute(CONTENT_SCHEMA.read_text())
    finally:
        await conn.close()


# ---------------------------------------------------------------- wiring into the app


@asynccontextmanager
async def run_in_background(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """Run the ETL loop for the app's lifetime (unless disabled); `app.state.etl` holds it."""
    app.state.etl = None
    if not settings.etl_runs:
        yield
        return
    etl = CatalogueEtl.from_settings(settings)
    app.state.etl = etl
    task = asyncio.create_task(etl.run_forever(), name="catalogue-etl")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await etl.close()


async def readiness(request: Request) -> str:
    """/recom/ready's "etl" entry. The API serves the catalogue it has even when the content
    database is down or the ETL lags, so these are reported without failing readiness."""
    etl: CatalogueEtl | None = getattr(request.app.state, "etl", None)
    return Degraded("disabled") if etl is None else etl.health()
