"""Loads the rating matrix from PostgreSQL at start and keeps it (and film titles) current by polling."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_recom.db import HORIZON
from fastapi_recom.recommender import IdMap, RatingMatrix, TitleCache, build_merged

logger = logging.getLogger(__name__)

# Binary COPY of (uuid, uuid, smallint): a 2-byte field count, then length-prefixed fields, so
# every row is exactly 48 bytes and a whole chunk parses with one numpy view.
_COPY_HEADER = 19
_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("user_len", ">i4"),
        ("user", "S16"),
        ("movie_len", ">i4"),
        ("movie", "S16"),
        ("score_len", ">i4"),
        ("score", ">i2"),
    ]
)
_LOAD_QUERY = "SELECT user_id, movie_id, score FROM rating WHERE NOT deleted"
_CHANGES_QUERY = "SELECT user_id, movie_id, score, deleted FROM rating WHERE updated_at >= $1"
# Requests allocate and free MB-sized numpy temporaries; glibc keeps the freed heap unless
# asked to return it, which costs well under a millisecond now and then.
_TRIM_EVERY = 10.0
# Seconds behind the clock at which an open transaction's hold on the refresh is logged.
_HELD_BACK_WARNING = 30.0
_TITLES_QUERY = "SELECT movie_id, title FROM movie WHERE updated_at >= $1"
_WITHDRAWN_QUERY = "SELECT movie_id FROM movie_withdrawn WHERE withdrawn_at >= $1"


class _Ids:
    """UUID bytes -> dense index, assigned in order of first appearance."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}

    def map(self, raw: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(raw, return_inverse=True)
        index = self.index
        mapped = np.fromiter(
            (index.setdefault(u, len(index)) for u in unique.tolist()),
            dtype=np.int32,
            count=unique.shape[0],
        )
        return mapped[inverse.ravel()]

    def sorted_id_map(self) -> tuple[IdMap, np.ndarray]:
        """The ids in byte order, and each assigned index's place in it.

        Indices follow the stream's chunks, which differ from load to load. Ties are broken by
        id whatever the numbering; numbering by id also makes every load lay the ratings out,
        and so sum them, in the same order.
        """
        raw = np.empty(len(self.index), dtype="S16")
        raw[list(self.index.values())] = list(self.index)
        order = np.argsort(raw, kind="stable")
        rank = np.empty(order.shape[0], dtype=np.int32)
        rank[order] = np.arange(order.shape[0], dtype=np.int32)
        return IdMap(raw[order]), rank


class _CopyParser:
    """Turns binary COPY chunks into int32 row/column arrays without a Python object per rating.

    Chunks are parsed a few MB at a time into arrays sized from a count taken beforehand, so
    the load allocates a handful of large blocks instead of thousands of small ones.
    """

    BLOCK = 8 << 20

    def __init__(self, expected: int) -> None:
        self.users = _Ids()
        self.movies = _Ids()
        capacity = max(expected, 1024)
        self.rows = np.empty(capacity, dtype=np.int32)
        self.cols = np.empty(capacity, dtype=np.int32)
        self.scores = np.empty(capacity, dtype=np.int8)
        self.size = 0
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._pending = b""
        self._header_done = False

    async def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= self.BLOCK:
            self._parse()

    def _parse(self) -> None:
        data = self._pending + b"".join(self._chunks)
        self._chunks, self._buffered = [], 0
        if not self._header_done:
            if len(data) < _COPY_HEADER:
                self._pending = data
                return
            data = data[_COPY_HEADER:]
            self._header_done = True
        count = len(data) // _ROW.itemsize
        self._pending = data[count * _ROW.itemsize :]
        if count == 0:
            return
        block = np.frombuffer(data, dtype=_ROW, count=count)
        end = self.size + count
        if end > self.rows.shape[0]:  # rows added since the count
            grown = max(end, self.rows.shape[0] * 5 // 4)
            self.rows = np.resize(self.rows, grown)
            self.cols = np.resize(self.cols, grown)
            self.scores = np.resize(self.scores, grown)
        self.rows[self.size : end] = self.users.map(block["user"])
        self.cols[self.size : end] = self.movies.map(block["movie"])
        self.scores[self.size : end] = block["score"]
        self.size = end

    def matrix(self) -> RatingMatrix:
        self._parse()  # what is left after it is the 2-byte trailer (-1)
        n = self.size
        users, user_rank = self.users.sorted_id_map()
        movies, movie_rank = self.movies.sorted_id_map()
        rows, cols = user_rank[self.rows[:n]], movie_rank[self.cols[:n]]
        del self.rows, self.cols
        matrix = RatingMatrix(users, movies, rows, cols, self.scores[:n])
        del self.scores
        return matrix


@contextlib.asynccontextmanager
async def _driver(engine: AsyncEngine) -> AsyncIterator[Any]:
    """The pooled connection's asyncpg connection: COPY and plain fetches without the ORM."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        yield raw.driver_connection


async def load_matrix(engine: AsyncEngine, margin: float = 3.0) -> tuple[RatingMatrix, datetime]:
    """Every live rating, and the horizon (fastapi_recom.db) taken just before reading them:
    the refresher reads rows stamped from there on."""
    async with _driver(engine) as driver:
        started_at: datetime = (await driver.fetchrow(HORIZON, margin))[0]
        expected = await driver.fetchval("SELECT count(*) FROM rating WHERE NOT deleted")
        parser = _CopyParser(expected)
        await driver.copy_from_query(_LOAD_QUERY, output=parser.feed, format="binary")
    matrix = parser.matrix()
    del parser
    _release_free_memory()
    return matrix, started_at


def _release_free_memory() -> None:
    """Hand the load's temporary buffers back to the OS, so resident memory is the matrix."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass(slots=True)
class MatrixStore:
    """One process's matrix and titles, and the background task that keeps them current.

    Freshness: every `interval` the refresher reads the rows whose `updated_at` (the server's
    clock_timestamp() at write time) is at or after the previous poll's horizon
    (fastapi_recom.db): the start of the oldest transaction then open, and at most `margin`
    seconds back. A row is stamped before its transaction commits, so a row that commits late,
    however late (a demo load of 100,000 ratings in one transaction), is read by the first poll
    after its commit. Applying a row sets the newest state and is idempotent, so reading it
    again is harmless. Film titles and withdrawn films are read the same way every
    `titles_interval`. PostgreSQL stays the source of truth: nothing here is written back.
    """

    engine: AsyncEngine
    interval: float = 0.2
    margin: float = 3.0
    titles_interval: float = 2.0
    merge_entries: int = 50_000
    merge_interval: float = 600.0
    matrix: RatingMatrix | None = None
    titles: TitleCache = field(default_factory=TitleCache)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    load_seconds: float | None = None
    _watermark: datetime | None = None
    # Loaded but not yet served: waiting for its first catalogue read.
    _built: tuple[RatingMatrix, datetime] | None = None
    _titles_watermark: datetime | None = None
    _last_merge: float = field(default_factory=time.monotonic)
    _last_lag_warning: float = 0.0
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Try the first load now (so a healthy start serves at once), then refresh forever."""
        try:
            await self._load()
        except Exception as exc:  # the database may be down: `_run` tries again
            logger.warning("rating matrix not loaded at start: %r", exc)
        self._task = asyncio.create_task(self._run(), name="recom-refresher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _load(self) -> None:
        """Serve the matrix only with the catalogue read: until then a film the catalogue does
        not list, or withdrew, would be picked. A failed titles read keeps the matrix built,
        and the next try reads only the titles."""
        if self._built is None:
            started = time.perf_counter()
            matrix, watermark = await load_matrix(self.engine, self.margin)
            self._built = matrix, watermark
            self.load_seconds = time.perf_counter() - started
        matrix, watermark = self._built
        await self.refresh_titles()
        matrix.use_catalogue(self.titles)
        # No await from here to `ready`: a matrix served is a store ready (/recom/ready).
        self.matrix, self._watermark = matrix, watermark
        self._built = None
        self.ready.set()
        logger.info(
            "rating matrix loaded: %s users, %s films, %s ratings in %.2f s",
            matrix.n_users,
            matrix.n_movies,
            matrix.nnz,
            self.load_seconds,
        )

    async def _run(self) -> None:
        next_titles = time.monotonic() + self.titles_interval
        next_trim = time.monotonic() + _TRIM_EVERY
        while True:
            try:
                if self.matrix is None:
                    await self._load()
                else:
                    await self.refresh()
                    if time.monotonic() >= next_titles:
                        await self.refresh_titles()
                        next_titles = time.monotonic() + self.titles_interval
                    await self._maybe_merge()
                    if time.monotonic() >= next_trim:
                        _release_free_memory()
                        next_trim = time.monotonic() + _TRIM_EVERY
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be down: keep serving what we hold
                logger.warning("rating refresh failed: %r", exc)
                await asyncio.sleep(1)
            await asyncio.sleep(self.interval)

    async def refresh(self) -> int:
        """Apply the rows changed since the last poll (minus the margin); returns how many changed."""
        assert self.matrix is not None
        assert self._watermark is not None
        async with _driver(self.engine) as driver:
            # Two statements, two snapshots: the horizon first, then the rows.
            horizon, now = await driver.fetchrow(HORIZON, self.margin)
            records = await driver.fetch(_CHANGES_QUERY, self._watermark)
        self._warn_if_held_back(horizon, now)
        changed = 0
        for user_id, movie_id, score, deleted in records:
            changed += self.matrix.apply(user_id, movie_id, 0 if deleted else score)
        self._watermark = horizon
        return changed

    def _warn_if_held_back(self, horizon: datetime, now: datetime) -> None:
        """A transaction left open in the database (an idle psql session) keeps the horizon at
        its start, so every poll rereads the rows written since: correct, but worth a word."""
        lag = (now - horizon).total_seconds()
        if lag > _HELD_BACK_WARNING and time.monotonic() - self._last_lag_warning > 60:
            self._last_lag_warning = time.monotonic()
            logger.warning(
                "a transaction open for %.0f s in the recom database holds the rating refresh "
                "back: each poll rereads the ratings written since it began",
                lag,
            )

    async def refresh_titles(self) -> None:
        """Titles and withdrawals stamped from the previous poll's horizon on (fastapi_recom.db):
        an ETL batch that commits late, however late, is read by the first poll after it."""
        since = self._titles_watermark or datetime(1970, 1, 1).astimezone()
        async with _driver(self.engine) as driver:
            horizon, _ = await driver.fetchrow(HORIZON, self.margin)
            # One snapshot for both, taken after the horizon: the ETL keeps a film in `movie`
            # or in `movie_withdrawn`.
            async with driver.transaction(isolation="repeatable_read", readonly=True):
                records = await driver.fetch(_TITLES_QUERY, since)
                gone = [r[0] for r in await driver.fetch(_WITHDRAWN_QUERY, since)]
        titles, withdrawn = self.titles.titles, self.titles.withdrawn
        # Only these can change what the matrix hides; an edited title changes nothing there.
        changed = [m for m, _ in records if m not in titles or m in withdrawn]
        for movie_id, title in records:
            titles[movie_id] = title
        withdrawn.difference_update(m for m, _ in records)
        withdrawn.update(gone)
        if self.matrix is not None:
            self.matrix.catalogue_changed([*changed, *gone])
        self._titles_watermark = horizon

    async def _maybe_merge(self) -> None:
        matrix = self.matrix
        assert matrix is not None
        size = matrix.overlay_size
        due = time.monotonic() - self._last_merge >= self.merge_interval
        if size == 0 or (size < self.merge_entries and not due):
            return
        snapshot = matrix.merge_snapshot()
        if snapshot is None:
            return
        # numpy releases the GIL for the heavy parts, so requests keep being served meanwhile.
        new_base = await asyncio.to_thread(build_merged, snapshot)
        matrix.install_merged(snapshot, new_base)
        self._last_merge = time.monotonic()
        logger.info("merged %s recent changes into the rating matrix", len(snapshot.overlay))
