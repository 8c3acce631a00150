"""User-user collaborative filtering over an in-memory sparse rating matrix kept current from PostgreSQL."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int32]
_Grown = TypeVar("_Grown", npt.NDArray[np.float64], npt.NDArray[np.bool_])
# Film columns in the viewer-major CSR: uint16 while the films fit, int32 beyond.
ColArray = npt.NDArray[np.integer[Any]]
FloatArray = npt.NDArray[np.float64]
ScoreArray = npt.NDArray[np.int8]

STRATEGY_NEIGHBOURS = "user_knn_cosine"
STRATEGY_POPULAR = "popular"


@dataclass(frozen=True, slots=True)
class Strategy:
    """The variant settings of the recommender (see bench/quality.py for how they compare)."""

    # Top-k most similar viewers whose ratings vote for films.
    neighbours: int = 80
    # Cosine of 0/1 "has rated" vectors (True) or of the raw scores (False).
    binary_similarity: bool = True
    # Each neighbour votes its similarity (True) or similarity x score (False).
    binary_votes: bool = True
    # Viewers with fewer ratings than this get the popular films instead.
    min_ratings: int = 3
    # Bayesian average: this many prior votes at the catalogue-wide mean score.
    prior_votes: float = 20.0
    # A film needs this many raters to be listed as popular.
    popular_min_ratings: int = 5
    # For a viewer with more ratings than this, only their rarest films (the most telling, and
    # the cheapest to scan) are compared with others; the cosine's norms stay exact.
    max_profile: int = 100


@dataclass(frozen=True, slots=True)
class Pick:
    movie_id: uuid.UUID
    score: float
    source: str  # "neighbours" or "popular"
    neighbours: int  # similar viewers who rated it (0 for popular picks)
    neighbour_mean_score: float | None
    ratings: int  # everyone who rated it
    mean_score: float | None

    @property
    def reason(self) -> str:
        if self.source == "neighbours":
            viewers = "viewer" if self.neighbours == 1 else "viewers"
            return (
                f"{self.neighbours} {viewers} with similar taste rated it, "
                f"average {self.neighbour_mean_score:.1f}/10"
            )
        if self.ratings:
            return f"popular: {self.ratings} viewers rated it, average {self.mean_score:.1f}/10"
        return "popular"


@dataclass(frozen=True, slots=True)
class Recommendation:
    user_id: uuid.UUID
    picks: list[Pick]
    strategy: str


@dataclass(frozen=True, slots=True)
class SimilarMovie:
    movie_id: uuid.UUID
    similarity: float
    common_viewers: int


class IdMap:
    """UUID <-> dense index without a Python object per id: 16 bytes per id in numpy arrays,
    looked up by binary search; ids added after the load go to a small dict."""

    def __init__(self, raw: npt.NDArray[np.bytes_]) -> None:
        self._ids: npt.NDArray[np.bytes_] = np.asarray(raw, dtype="S16")
        self._size = int(self._ids.shape[0])
        self._order = np.argsort(self._ids, kind="stable").astype(np.int32)
        self._sorted = self._ids[self._order]
        self._added: dict[uuid.UUID, int] = {}

    @classmethod
    def of(cls, ids: Sequence[uuid.UUID]) -> IdMap:
        return cls(np.array([i.bytes for i in ids], dtype="S16"))

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> uuid.UUID:
        # numpy's S dtype drops trailing NUL bytes.
        return uuid.UUID(bytes=bytes(self._ids[index]).ljust(16, b"\0"))

    def get(self, key: uuid.UUID) -> int | None:
        added = self._added.get(key)
        if added is not None:
            return added
        at = int(np.searchsorted(self._sorted, key.bytes))
        if at < self._sorted.shape[0] and bytes(self._sorted[at]).ljust(16, b"\0") == key.bytes:
            return int(self._order[at])
        return None

    def raw(self, indices: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.bytes_]:
        """The ids at `indices` as 16-byte strings, which sort in the order of the UUIDs."""
        return self._ids[indices]

    def add(self, key: uuid.UUID) -> int:
        index = self._size
        if index >= self._ids.shape[0]:
            grown = np.zeros(max(16, 2 * self._ids.shape[0]), dtype="S16")
            grown[:index] = self._ids[:index]
            self._ids = grown
        self._ids[index] = key.bytes
        self._added[key] = index
        self._size += 1
        return index

    @property
    def nbytes(self) -> int:
        return int(self._ids.nbytes + self._order.nbytes + self._sorted.nbytes)


# Film-major viewer rows are stored as uint16 within blocks of this many viewers.
ROW_BLOCK = 1 << 16


def column_dtype(n_movies: int) -> type[np.integer[Any]]:
    """The narrowest index type for film columns: uint16 halves the viewer-major indices."""
    return np.uint16 if n_movies <= np.iinfo(np.uint16).max + 1 else np.int32


@dataclass(slots=True)
class _Base:
    """An immutable CSR pair: users x movies (uint16 or int32 columns, see `column_dtype`) and
    its transpose, int8 scores.

    The transpose keeps 2 bytes a viewer row too: its CSR rows are (film, block of ROW_BLOCK
    viewers) pairs, `film * m_blocks + row // ROW_BLOCK`, holding `row % ROW_BLOCK`; a film's
    blocks are adjacent, so its raters stay one contiguous, ascending run.

    The film-major scores are only read by the score-weighted (non-default) similarity, so they
    are derived on first use rather than held by every worker from the start.
    """

    n_users: int
    n_movies: int
    u_indptr: npt.NDArray[np.int64]
    u_indices: ColArray
    u_data: ScoreArray
    m_blocks: int
    m_indptr: npt.NDArray[np.int64]
    m_indices: npt.NDArray[np.uint16]
    _m_data: ScoreArray | None = None

    @classmethod
    def build(
        cls,
        rows: IntArray,
        cols: IntArray,
        scores: ScoreArray,
        n_users: int,
        n_movies: int,
        movie_scores: bool = False,
    ) -> _Base:
        # One stable sort of a combined key: ~3x faster than lexsort on 10 M ratings, most of
        # all when the COPY delivers them grouped by viewer (timsort finds the runs).
        order = np.argsort(rows.astype(np.int64) * n_movies + cols, kind="stable")
        u_indptr = _indptr(rows, n_users)
        u_indices = cols[order].astype(column_dtype(n_movies))
        u_data = scores[order].astype(np.int8)
        del order
        blocks = max(1, -(-n_users // ROW_BLOCK))
        segments = cols.astype(np.int64) * blocks + rows // ROW_BLOCK
        m_indptr = _indptr(segments, n_movies * blocks)
        del segments
        base = cls(n_users, n_movies, u_indptr, u_indices, u_data, blocks, m_indptr, _EMPTY_ROW)
        # Film-major order is the viewer-major one stably sorted by film (a radix sort for uint16).
        order = base._movie_order()
        rows_by_movie = np.repeat(np.arange(n_users, dtype=np.int32), np.diff(u_indptr))[order]
        base.m_indices = (rows_by_movie % ROW_BLOCK).astype(np.uint16)
        del rows_by_movie
        if movie_scores:
            base._m_data = u_data[order]
        return base

    def _movie_order(self) -> npt.NDArray[np.intp]:
        return np.argsort(self.u_indices, kind="stable")

    @property
    def m_data(self) -> ScoreArray:
        if self._m_data is None:
            self._m_data = self.u_data[self._movie_order()]
        return self._m_data

    @property
    def has_movie_scores(self) -> bool:
        return self._m_data is not None

    @property
    def nnz(self) -> int:
        return int(self.u_indices.shape[0])

    def user_row(self, row: int) -> tuple[ColArray, ScoreArray]:
        if row >= self.n_users:
            return _EMPTY_INT, _EMPTY_SCORE
        start, end = self.u_indptr[row], self.u_indptr[row + 1]
        return self.u_indices[start:end], self.u_data[start:end]

    def movie_entries(
        self, cols: ColArray
    ) -> tuple[IntArray, npt.NDArray[np.int64], IntArray, npt.NDArray[np.int64]]:
        """Every rating of the films `cols`, as runs (one per film and block of viewers): the
        run's film (position in `cols`) and length, then each rating's viewer row and offset
        into the film-major arrays; viewers ascending within a film."""
        blocks = self.m_blocks
        segments = (cols.astype(np.int64)[:, None] * blocks + np.arange(blocks)).ravel()
        known, lengths, offsets = _offsets(self.m_indptr, segments)
        raters = self.m_indices[offsets].astype(np.int32)
        if blocks > 1:
            raters += np.repeat(known % blocks, lengths).astype(np.int32) * ROW_BLOCK
        return known // blocks, lengths, raters, offsets

    def movie_raters(self, col: int) -> IntArray:
        return self.movie_entries(np.array([col]))[2]

    def movie_row(self, col: int) -> tuple[IntArray, ScoreArray]:
        _, _, raters, offsets = self.movie_entries(np.array([col]))
        return raters, self.m_data[offsets]

    def value(self, row: int, col: int) -> int:
        if col >= self.n_movies:  # a film added since the build (and beyond a uint16 column)
            return 0
        cols, data = self.user_row(row)
        at = int(np.searchsorted(cols, col))
        return int(data[at]) if at < cols.shape[0] and cols[at] == col else 0


_EMPTY_INT: IntArray = np.zeros(0, dtype=np.int32)
_EMPTY_SCORE: ScoreArray = np.zeros(0, dtype=np.int8)
_EMPTY_ROW: npt.NDArray[np.uint16] = np.zeros(0, dtype=np.uint16)


def _indptr(rows: IntArray, n_rows: int) -> npt.NDArray[np.int64]:
    """CSR row pointers. numpy rather than scipy.sparse: importing scipy costs every worker
    ~26 MB of resident memory; the sorts' temporaries are freed at once."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr


def _sums(index: ColArray, weights: FloatArray, size: int) -> FloatArray:
    return np.bincount(index, weights, minlength=size).astype(np.float64, copy=False)


def _offsets(
    indptr: npt.NDArray[np.int64], rows: ColArray | npt.NDArray[np.int64]
) -> tuple[IntArray, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Where the entries of several CSR rows are: (positions in `rows` of the rows that have
    entries, how many each has, offset of every entry, row after row)."""
    # Rows added since the base was built have no base entries.
    known = np.flatnonzero(rows < indptr.shape[0] - 1).astype(np.int32)
    starts = indptr[rows[known]]
    # indptr[1:][r], not indptr[r + 1]: r + 1 wraps around for the last uint16 column.
    lengths = indptr[1:][rows[known]] - starts
    total = int(lengths.sum())
    if total == 0:
        return _EMPTY_INT, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # Index of every entry: each row's start repeated over its length plus a running offset.
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
    return known, lengths, offsets


@dataclass(frozen=True, slots=True)
class _Entries:
    """The live entries of several rows (`RatingMatrix._gather_live`), as `others` (the other
    index) and `values`: first the base entries, run after run (`lengths[j]` of them for the row
    at position `known[j]` of the rows asked for), then the overlay's corrections, one for the
    row at position `extra[i]` each."""

    known: IntArray
    lengths: npt.NDArray[np.int64]
    extra: IntArray
    others: ColArray
    values: FloatArray

    def spread(self, per_row: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """`per_row[position of the entry's row]` for every entry: a repeat for the base
        entries, a third of the cost of gathering the same values by position."""
        spread = np.repeat(per_row[self.known], self.lengths)
        if self.extra.shape[0]:
            spread = np.concatenate([spread, per_row[self.extra]])
        return spread


def _with_changes(
    index: ColArray, data: ScoreArray, changes: dict[int, int] | None
) -> tuple[ColArray, ScoreArray]:
    """One base row with the overlay's changes applied: live entries (score > 0), sorted."""
    if not changes:
        return index, data
    merged = dict(zip(index.tolist(), data.tolist(), strict=True))
    merged.update(changes)
    live = sorted((i, s) for i, s in merged.items() if s > 0)
    return (
        np.fromiter((i for i, _ in live), dtype=np.int32, count=len(live)),
        np.fromiter((s for _, s in live), dtype=np.int8, count=len(live)),
    )


# Scores are sums of floats. The same sum taken in another order (a worker's recent ratings on
# top of the loaded matrix, against a worker whose matrix has merged them) can differ in its last
# bits, so scores are compared in steps of this size, and every replica breaks ties by id alike.
_SCORE_STEP = 1e-9


def _top(
    candidates: ColArray, values: npt.NDArray[np.number[Any]], limit: int, ids: IdMap
) -> npt.NDArray[np.intp]:
    """Positions of the `limit` largest `values` (in steps of `_SCORE_STEP`), ties to the
    smaller id, sorting only what can make the cut (on 20,000 films a full sort cost a tenth of
    a recommendation)."""
    if values.shape[0] > 2 * limit:
        bound = np.partition(values, -limit)[-limit]
        kept = np.flatnonzero(values >= bound - _SCORE_STEP)
    else:
        kept = np.arange(values.shape[0])
    steps = np.rint(values[kept] * (1 / _SCORE_STEP))  # rint: 0.6 us against round's 1.6
    return kept[np.lexsort((ids.raw(candidates[kept]), -steps))[:limit]]


def _rarest(counts: npt.NDArray[np.number[Any]], cols: ColArray, ids: IdMap, k: int) -> IntArray:
    """Positions of the `k` smallest `counts`, ties to the smaller id, ascending.

    The rule is the same on every machine and whatever order the films were indexed in (by id
    at load, by arrival after it). `argpartition`'s choice among equal counts depends on the
    CPU's vector instructions, and a position on the load's history: replicas kept different
    films and gave the same viewer different picks.
    """
    bound = np.partition(counts, k - 1)[k - 1]
    below = np.flatnonzero(counts < bound)
    ties = np.flatnonzero(counts == bound)
    need = k - below.shape[0]
    if ties.shape[0] > need:
        ties = ties[np.argsort(ids.raw(cols[ties]), kind="stable")[:need]]
    return np.sort(np.concatenate((below, ties)))


# On more viewers than this, the k nearest are first screened with a sample (`_most_similar`).
_SCREEN_FROM = 16_384
_SCREEN_SAMPLE = 2_048


def _most_similar(sims: FloatArray, k: int) -> IntArray:
    """The viewers with a positive similarity at least the k-th largest (ties kept), ascending.

    The k-th largest of any sample is a lower bound of the k-th largest of all: on a large set
    the viewers below a strided sample's k-th best are dropped in one comparison pass, and only
    the few left are partitioned (numpy's partition of 100,000 similarities cost a sixth of a
    recommendation, and introselect slows down ~30x on an array that is mostly zeros).
    """
    n = sims.shape[0]
    floor = 0.0
    if n >= _SCREEN_FROM and 8 * k <= n:
        sample = sims[:: n // max(_SCREEN_SAMPLE, 8 * k)]
        floor = float(np.partition(sample, -k)[-k])
    rows = np.flatnonzero(sims >= floor if floor > 0 else sims > 0)
    pool = sims[rows]
    if pool.shape[0] > k:
        rows = rows[pool >= np.partition(pool, -k)[-k]]
    return rows.astype(np.int32)


def _mean(total: float, count: float) -> float | None:
    return round(total / count, 2) if count else None


class RatingMatrix:
    """All live ratings in memory: an immutable CSR base plus a small overlay of later changes.

    Changes from the refresher go into the overlay at once (so every request sees them) and the
    per-user and per-film statistics are updated in place; the overlay is folded into a new base
    only now and then (`merge`), so a rating never costs a rebuild of the whole matrix.
    """

    def __init__(
        self,
        user_ids: IdMap,
        movie_ids: IdMap,
        rows: IntArray,
        cols: IntArray,
        scores: ScoreArray,
    ) -> None:
        # `user_ids[row]` is a viewer's id, `user_ids.get(user_id)` their row; films alike.
        self.user_ids = user_ids
        self.movie_ids = movie_ids
        self.user_index = user_ids
        self.movie_index = movie_ids
        self._base = _Base.build(rows, cols, scores, len(self.user_ids), len(self.movie_ids))
        # (row, col) -> new score (0 = deleted) for entries that differ from the base.
        self._overlay: dict[tuple[int, int], int] = {}
        self._overlay_by_user: dict[int, dict[int, int]] = {}
        self._overlay_by_movie: dict[int, dict[int, int]] = {}
        # Live per-viewer and per-film sums, updated in place by `apply`.
        scores64 = scores.astype(np.float64)
        n_users, n_movies = len(self.user_ids), len(self.movie_ids)
        self.user_count = np.bincount(rows, minlength=n_users).astype(np.float64)
        # The binary cosine's norms, kept rather than recomputed per request: sqrt(user_count),
        # and 1 for a viewer with no ratings (whose dot products are 0), so dividing needs no mask.
        self.user_norm = np.sqrt(np.maximum(self.user_count, 1.0))
        self.user_sq = _sums(rows, scores64**2, n_users)
        self.movie_count = np.bincount(cols, minlength=n_movies).astype(np.float64)
        self.movie_sum = _sums(cols, scores64, n_movies)
        self.movie_sq = _sums(cols, scores64**2, n_movies)
        self.version = 0
        self._popular_cache: tuple[int, float, IntArray, FloatArray] | None = None
        # Films' ids as UUID objects, made once each: picks name the same films again and again.
        self._movie_uuids: dict[int, uuid.UUID] = {}
        # Films never picked nor listed as similar (`TitleCache.hides`); their ratings count.
        self.catalogue = TitleCache()
        # Whether the catalogue listed any film when `hidden` was last computed in full.
        self._catalogue_lists = False
        self.hidden: npt.NDArray[np.bool_] = np.zeros(n_movies, dtype=bool)

    @classmethod
    def from_triples(cls, triples: Iterable[tuple[uuid.UUID, uuid.UUID, int]]) -> RatingMatrix:
        """Small matrices (tests, the offline evaluation): one (user, movie, score) per rating."""
        user_index: dict[uuid.UUID, int] = {}
        movie_index: dict[uuid.UUID, int] = {}
        rows, cols, scores = [], [], []
        for user_id, movie_id, score in triples:
            rows.append(user_index.setdefault(user_id, len(user_index)))
            cols.append(movie_index.setdefault(movie_id, len(movie_index)))
            scores.append(score)
        return cls(
            IdMap.of(list(user_index)),
            IdMap.of(list(movie_index)),
            np.asarray(rows, dtype=np.int32),
            np.asarray(cols, dtype=np.int32),
            np.asarray(scores, dtype=np.int8),
        )

    # ------------------------------------------------------------------ state

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_movies(self) -> int:
        return len(self.movie_ids)

    @property
    def nnz(self) -> int:
        return int(self.user_count.sum())

    @property
    def overlay_size(self) -> int:
        return len(self._overlay)

    def nbytes(self) -> dict[str, int]:
        """Bytes held per part (bench/recommender.py prints them); film-major scores only once
        a score-weighted similarity asked for them."""
        base = self._base
        parts = {
            "viewer-major columns": base.u_indices.nbytes,
            "viewer-major scores": base.u_data.nbytes,
            "film-major rows": base.m_indices.nbytes,
            "row pointers": base.u_indptr.nbytes + base.m_indptr.nbytes,
            "ids": self.user_ids.nbytes + self.movie_ids.nbytes,
            "statistics": sum(
                a.nbytes
                for a in (
                    self.user_count,
                    self.user_norm,
                    self.user_sq,
                    self.movie_count,
                    self.movie_sum,
                    self.movie_sq,
                )
            ),
        }
        if base.has_movie_scores:
            parts["film-major scores"] = base.m_data.nbytes
        return parts

    def _grow(self, array: _Grown, size: int) -> _Grown:
        if size <= array.shape[0]:
            return array
        grown = np.zeros(max(size, 2 * array.shape[0]), dtype=array.dtype)
        grown[: array.shape[0]] = array
        return grown

    def _add_row(self, user_id: uuid.UUID) -> int:
        row = self.user_ids.add(user_id)
        self.user_count = self._grow(self.user_count, row + 1)
        self.user_norm = self._grow(self.user_norm, row + 1)
        self.user_norm[row] = 1.0
        self.user_sq = self._grow(self.user_sq, row + 1)
        return row

    def _add_col(self, movie_id: uuid.UUID) -> int:
        col = self.movie_ids.add(movie_id)
        self.movie_count = self._grow(self.movie_count, col + 1)
        self.movie_sum = self._grow(self.movie_sum, col + 1)
        self.movie_sq = self._grow(self.movie_sq, col + 1)
        self.hidden = self._grow(self.hidden, col + 1)
        self.hidden[col] = self.catalogue.hides(movie_id)
        return col

    def use_catalogue(self, catalogue: TitleCache) -> None:
        """Hide what `catalogue` hides, now and as it changes (`catalogue_changed`): the matrix
        keeps a reference, so a film rated for the first time later is judged by it too."""
        self.catalogue = catalogue
        self._catalogue_lists = bool(catalogue.titles)
        ids = self.movie_ids
        self.hidden[: self.n_movies] = [catalogue.hides(ids[col]) for col in range(self.n_movies)]

    def catalogue_changed(self, movie_ids: Iterable[uuid.UUID]) -> None:
        """The catalogue listed, withdrew or returned `movie_ids`. Its first film hides every
        film it does not list, so that one changes them all."""
        if bool(self.catalogue.titles) != self._catalogue_lists:
            self.use_catalogue(self.catalogue)
            return
        for movie_id in movie_ids:
            col = self.movie_index.get(movie_id)
            if col is not None:
                self.hidden[col] = self.catalogue.hides(movie_id)

    def value(self, row: int, col: int) -> int:
        """The live score (0 = none) of one viewer for one film."""
        key = (row, col)
        if key in self._overlay:
            return self._overlay[key]
        return self._base.value(row, col)

    def apply(self, user_id: uuid.UUID, movie_id: uuid.UUID, score: int) -> bool:
        """Set the newest state of one rating (score 0 = deleted); idempotent. True if it changed."""
        row = self.user_index.get(user_id)
        col = self.movie_index.get(movie_id)
        if row is None or col is None:
            # Deleting a rating of a viewer or film never seen changes nothing. A row or column
            # for it would stay for good, and every request pays per film (DELETE of any id
            # answers 202, so anyone could grow every replica's matrix).
            if score == 0:
                return False
            row = self._add_row(user_id) if row is None else row
            col = self._add_col(movie_id) if col is None else col
        old = self.value(row, col)
        if old == score:
            return False
        base = self._base.value(row, col)
        key = (row, col)
        if score == base:
            del self._overlay[key]
            self._overlay_by_user[row].pop(col, None)
            self._overlay_by_movie[col].pop(row, None)
        else:
            self._set_overlay(row, col, score)
        present = (score > 0) - (old > 0)
        self.user_count[row] += present
        self.user_norm[row] = math.sqrt(max(self.user_count[row], 1.0))
        self.user_sq[row] += score * score - old * old
        self.movie_count[col] += present
        self.movie_sum[col] += score - old
        self.movie_sq[col] += score * score - old * old
        self.version += 1
        return True

    def merge(self) -> int:
        """Fold the overlay into a new base in one go (tests, the offline evaluation)."""
        snapshot = self.merge_snapshot()
        if snapshot is None:
            return 0
        self.install_merged(snapshot, build_merged(snapshot))
        return len(snapshot.overlay)

    def merge_snapshot(self) -> MergeSnapshot | None:
        """What `build_merged` needs; taken in the event loop, like every other read."""
        if not self._overlay:
            return None
        return MergeSnapshot(self._base, dict(self._overlay), self.n_users, self.n_movies)

    def install_merged(self, snapshot: MergeSnapshot, new_base: _Base) -> None:
        """Swap in the merged base; changes that arrived while it was built stay in the overlay."""
        remaining = {k: v for k, v in self._overlay.items() if snapshot.overlay.get(k) != v}
        self._base = new_base
        self._overlay = {}
        self._overlay_by_user = {}
        self._overlay_by_movie = {}
        for (row, col), score in remaining.items():
            if new_base.value(row, col) != score:
                self._set_overlay(row, col, score)

    def _set_overlay(self, row: int, col: int, score: int) -> None:
        self._overlay[(row, col)] = score
        self._overlay_by_user.setdefault(row, {})[col] = score
        self._overlay_by_movie.setdefault(col, {})[row] = score

    def user_vector(self, row: int) -> tuple[ColArray, ScoreArray]:
        """The live ratings of one viewer: film columns (sorted) and scores."""
        cols, data = self._base.user_row(row)
        return _with_changes(cols, data, self._overlay_by_user.get(row))

    def _gather_live(self, by_users: bool, rows: ColArray) -> _Entries:
        """The live entries of `rows` (viewer rows, or film columns), overlay included.

        Overlay entries are added as corrections (+new, -old), so sums over the result equal
        sums over the live matrix without copying any row.
        """
        base = self._base
        others: ColArray
        if by_users:
            known, lengths, offsets = _offsets(base.u_indptr, rows)
            others, data = base.u_indices[offsets], base.u_data[offsets]
            overlay = self._overlay_by_user
        else:
            known, lengths, others, offsets = base.movie_entries(rows)
            data = base.m_data[offsets]
            overlay = self._overlay_by_movie
        values = data.astype(np.float64)
        extra_pos: list[int] = []
        extra_other: list[int] = []
        extra_value: list[float] = []
        if overlay:
            for position, row in enumerate(rows.tolist()):
                for other, new in overlay.get(row, {}).items():
                    old = base.value(row, other) if by_users else base.value(other, row)
                    if old:
                        extra_pos.append(position)
                        extra_other.append(other)
                        extra_value.append(-old)
                    if new:
                        extra_pos.append(position)
                        extra_other.append(other)
                        extra_value.append(new)
        if extra_pos:
            others = np.concatenate([others, np.asarray(extra_other, dtype=np.int32)])
            values = np.concatenate([values, np.asarray(extra_value, dtype=np.float64)])
        extra = np.asarray(extra_pos, dtype=np.int32) if extra_pos else _EMPTY_INT
        return _Entries(known, lengths, extra, others, values)

    # ------------------------------------------------------------------ algorithms

    def popular(self, strategy: Strategy) -> tuple[IntArray, FloatArray]:
        """Film columns by Bayesian average score (best first) and those averages."""
        cached = self._popular_cache
        if cached is not None and cached[0] == self.version and cached[1] == strategy.prior_votes:
            return cached[2], cached[3]
        n = self.n_movies
        count = self.movie_count[:n]
        total = self.movie_sum[:n]
        mean = float(total.sum() / count.sum()) if count.sum() else 0.0
        bayes = (strategy.prior_votes * mean + total) / (strategy.prior_votes + count)
        eligible = np.flatnonzero(count >= strategy.popular_min_ratings).astype(np.int32)
        order = eligible[np.lexsort((self.movie_ids.raw(eligible), -bayes[eligible]))]
        self._popular_cache = (self.version, strategy.prior_votes, order, bayes)
        return order, bayes

    def neighbours(
        self, row: int, strategy: Strategy, vector: tuple[ColArray, ScoreArray] | None = None
    ) -> tuple[IntArray, FloatArray]:
        """The top-k most similar other viewers (rows) and their cosine similarity, best first;
        `vector` is the viewer's `user_vector` when the caller already has it."""
        cols, scores = self.user_vector(row) if vector is None else vector
        if cols.shape[0] == 0:
            return _EMPTY_INT, np.zeros(0)
        n_users = self.n_users
        if strategy.binary_similarity:
            own_norm = math.sqrt(cols.shape[0])
        else:
            own_norm = math.sqrt(float(np.sum(scores.astype(np.float64) ** 2)))
        if cols.shape[0] > strategy.max_profile:
            keep = _rarest(self.movie_count[cols], cols, self.movie_ids, strategy.max_profile)
            cols, scores = cols[keep], scores[keep]
        if strategy.binary_similarity:
            # 0/1 vectors: the dot product counts the films both rated. The counts stay
            # integers: the division below makes the floats (the same bits, one pass fewer).
            dots: npt.NDArray[np.number[Any]] = self._co_rating_counts(cols, n_users)
            norms = self.user_norm[:n_users]
        else:
            entries = self._gather_live(False, cols)
            dots = _sums(entries.others, entries.values * entries.spread(scores), n_users)
            # Scores are >= 1, so a viewer with ratings has a norm >= 1 (see `user_norm`).
            norms = np.sqrt(np.maximum(self.user_sq[:n_users], 1.0))
        dots[row] = 0
        # Dense over all viewers (on a large set most share a film with a typical viewer): one
        # pass a step, no gathers; the same arithmetic, so the same bits, as dividing per
        # candidate. Norms are >= 1, so viewers without a common film get exactly 0.
        sims: FloatArray = np.divide(dots, norms * own_norm)
        k = strategy.neighbours
        candidates = _most_similar(sims, k)
        kept = sims[candidates]
        order = np.lexsort((self.user_ids.raw(candidates), -kept))[:k]
        return candidates[order], kept[order]

    def _co_rating_counts(self, cols: ColArray, n_users: int) -> npt.NDArray[np.int64]:
        """How many of `cols` each viewer rated: the hot path, so slices and one bincount per
        block of viewers (the film-major rows within a block need no decoding)."""
        base = self._base
        blocks = base.m_blocks
        segments = cols[cols < base.n_movies].astype(np.int64) * blocks
        indptr, indices = base.m_indptr, base.m_indices
        dots = np.zeros(n_users, dtype=np.int64)
        for block in range(blocks):
            starts = indptr[segments + block].tolist()
            ends = indptr[1:][segments + block].tolist()
            parts = [indices[a:b] for a, b in zip(starts, ends, strict=True)]
            if parts:
                low = block * ROW_BLOCK
                size = min(ROW_BLOCK, base.n_users - low)
                dots[low : low + size] = np.bincount(np.concatenate(parts), minlength=size)
        if self._overlay_by_movie:
            for col in cols.tolist():
                for other, new in self._overlay_by_movie.get(col, {}).items():
                    dots[other] += (new > 0) - (base.value(other, col) > 0)
        return dots

    def recommend(
        self,
        user_id: uuid.UUID,
        limit: int,
        strategy: Strategy,
        exclude: Iterable[uuid.UUID] = (),
    ) -> Recommendation:
        """Top `limit` films for one viewer, never one they rated or asked to exclude."""
        row = self.user_index.get(user_id)
        n_movies = self.n_movies
        banned = self.hidden[:n_movies].copy()
        for movie_id in exclude:
            col = self.movie_index.get(movie_id)
            if col is not None:
                banned[col] = True
        picks: list[Pick] = []
        strategy_name = STRATEGY_POPULAR
        if row is not None:
            vector = self.user_vector(row)
            banned[vector[0]] = True
            if vector[0].shape[0] >= strategy.min_ratings:
                strategy_name = STRATEGY_NEIGHBOURS
                picks = self._neighbour_picks(row, vector, limit, strategy, banned)
        if len(picks) < limit:
            for pick in picks:
                banned[self.movie_index.get(pick.movie_id)] = True
            picks.extend(self._popular_picks(limit - len(picks), strategy, banned))
        return Recommendation(user_id=user_id, picks=picks, strategy=strategy_name)

    def _neighbour_picks(
        self,
        row: int,
        vector: tuple[ColArray, ScoreArray],
        limit: int,
        strategy: Strategy,
        banned: npt.NDArray[np.bool_],
    ) -> list[Pick]:
        neighbours, sims = self.neighbours(row, strategy, vector)
        if neighbours.shape[0] == 0:
            return []
        entries = self._gather_live(True, neighbours)
        values = entries.values
        # bincount casts its index to intp: once rather than per count.
        cols = entries.others.astype(np.intp)
        n_movies = self.n_movies
        near = entries.spread(sims)
        if values.shape[0] == 0 or values.min() > 0:
            # No overlay corrections (-old) among these rows: every entry is one live rating,
            # so the counts need no weights and binary votes are the similarities themselves.
            count = np.bincount(cols, minlength=n_movies)
            votes = near if strategy.binary_votes else near * values
        else:
            present = np.sign(values)
            count = np.bincount(cols, present, minlength=n_movies)
            votes = near * (present if strategy.binary_votes else values)
        score = np.bincount(cols, votes, minlength=n_movies)
        total = np.bincount(cols, values, minlength=n_movies)
        candidates = np.flatnonzero((count > 0) & ~banned)
        if candidates.shape[0] == 0:
            return []
        top = candidates[_top(candidates, score[candidates], limit, self.movie_ids)]
        # Plain Python numbers from here: numpy scalar arithmetic costs a microsecond a step.
        raters, rating_sums = self._rating_stats(top)
        return [
            Pick(
                movie_id=self._movie_id(col),
                score=round(col_score, 4),
                source="neighbours",
                neighbours=int(col_count),
                neighbour_mean_score=round(col_total / col_count, 2),
                ratings=int(col_raters),
                mean_score=_mean(col_sum, col_raters),
            )
            for col, col_score, col_count, col_total, col_raters, col_sum in zip(
                top.tolist(),
                score[top].tolist(),
                count[top].tolist(),
                total[top].tolist(),
                raters,
                rating_sums,
                strict=True,
            )
        ]

    def _movie_id(self, col: int) -> uuid.UUID:
        movie_id = self._movie_uuids.get(col)
        if movie_id is None:
            movie_id = self._movie_uuids[col] = self.movie_ids[col]
        return movie_id

    def _rating_stats(self, cols: ColArray) -> tuple[list[float], list[float]]:
        """How many viewers rated each film of `cols`, and the sum of their scores."""
        return self.movie_count[cols].tolist(), self.movie_sum[cols].tolist()

    def _popular_picks(
        self, limit: int, strategy: Strategy, banned: npt.NDArray[np.bool_] | None = None
    ) -> list[Pick]:
        order, bayes = self.popular(strategy)
        if banned is not None:
            order = order[~banned[order]]
        top = order[:limit]
        raters, rating_sums = self._rating_stats(top)
        return [
            Pick(
                movie_id=self._movie_id(col),
                score=round(col_bayes, 4),
                source="popular",
                neighbours=0,
                neighbour_mean_score=None,
                ratings=int(col_raters),
                mean_score=_mean(col_sum, col_raters),
            )
            for col, col_bayes, col_raters, col_sum in zip(
                top.tolist(), bayes[top].tolist(), raters, rating_sums, strict=True
            )
        ]

    def general(self, limit: int, strategy: Strategy) -> list[Pick]:
        """Popular, well-rated films for anyone."""
        return self._popular_picks(limit, strategy, self.hidden[: self.n_movies])

    def similar_movies(
        self, movie_id: uuid.UUID, limit: int, strategy: Strategy
    ) -> list[SimilarMovie] | None:
        """Films whose rating columns are most similar (cosine); None if the film is unknown."""
        col = self.movie_index.get(movie_id)
        if col is None:
            return None
        raters, scores = self._movie_vector(col, with_scores=not strategy.binary_similarity)
        if raters.shape[0] == 0:
            return []
        entries = self._gather_live(True, raters)
        others, values = entries.others, entries.values
        n_movies = self.n_movies
        present = np.sign(values)
        common = np.bincount(others, present, minlength=n_movies)
        if strategy.binary_similarity:
            dots = common
            norms = np.sqrt(self.movie_count[:n_movies])
            own_norm = math.sqrt(raters.shape[0])
        else:
            dots = np.bincount(others, values * entries.spread(scores), minlength=n_movies)
            norms = np.sqrt(self.movie_sq[:n_movies])
            own_norm = math.sqrt(float(np.sum(scores.astype(np.float64) ** 2)))
        dots[col] = 0.0
        candidates = np.flatnonzero((dots > 0) & ~self.hidden[:n_movies])
        sims = dots[candidates] / (norms[candidates] * own_norm)
        order = _top(candidates, sims, limit, self.movie_ids)
        return [
            SimilarMovie(
                movie_id=self._movie_id(int(candidates[i])),
                similarity=round(float(sims[i]), 4),
                common_viewers=int(common[candidates[i]]),
            )
            for i in order.tolist()
        ]

    def _movie_vector(self, col: int, with_scores: bool) -> tuple[ColArray, ScoreArray]:
        """The live raters of one film (sorted) and their scores (all 1 unless `with_scores`)."""
        if with_scores:
            rows, data = self._base.movie_row(col)
        else:
            rows = self._base.movie_raters(col)
            data = np.ones(rows.shape[0], dtype=np.int8)
        return _with_changes(rows, data, self._overlay_by_movie.get(col))

    def user_ratings(self, user_id: uuid.UUID) -> list[tuple[uuid.UUID, int]]:
        """What recom holds for one viewer, as (movie_id, score), by film id: the same order on
        every replica (film columns are numbered by id at a load, by arrival after it), so the
        router's pages neither repeat nor skip a film from one replica to the next."""
        row = self.user_index.get(user_id)
        if row is None:
            return []
        cols, scores = self.user_vector(row)
        order = np.argsort(self.movie_ids.raw(cols), kind="stable")
        return [
            (self._movie_id(c), s)
            for c, s in zip(cols[order].tolist(), scores[order].tolist(), strict=True)
        ]


@dataclass(frozen=True, slots=True)
class MergeSnapshot:
    base: _Base
    overlay: dict[tuple[int, int], int]
    n_users: int
    n_movies: int


def build_merged(snapshot: MergeSnapshot) -> _Base:
    """The base with the overlay folded in; pure numpy, so it can run in a worker thread."""
    base, overlay = snapshot.base, snapshot.overlay
    keys = np.array(list(overlay), dtype=np.int64).reshape(-1, 2)
    values = np.fromiter(overlay.values(), dtype=np.int8, count=len(overlay))
    rows = np.repeat(np.arange(base.n_users, dtype=np.int32), np.diff(base.u_indptr))
    # Drop the base entries the overlay overrides, then add the overlay's live ones.
    stale = np.isin(
        rows.astype(np.int64) * snapshot.n_movies + base.u_indices,
        keys[:, 0] * snapshot.n_movies + keys[:, 1],
    )
    live = values > 0
    return _Base.build(
        np.concatenate([rows[~stale], keys[live, 0].astype(np.int32)]),
        np.concatenate([base.u_indices[~stale], keys[live, 1].astype(np.int32)]),
        np.concatenate([base.u_data[~stale], values[live]]),
        snapshot.n_users,
        snapshot.n_movies,
        movie_scores=base.has_movie_scores,
    )


@dataclass(slots=True)
class TitleCache:
    """Film titles from the catalogue, kept in memory so requests never query for them, and the
    films it withdrew."""

    titles: dict[uuid.UUID, str] = field(default_factory=dict)
    withdrawn: set[uuid.UUID] = field(default_factory=set)

    def get(self, movie_id: uuid.UUID) -> str | None:
        return self.titles.get(movie_id)

    def hides(self, movie_id: uuid.UUID) -> bool:
        """Films not to recommend: the withdrawn ones, and, once the catalogue lists any film,
        the films it does not list (a mistyped or invented id, or one the ETL has not reached
        yet), which would otherwise reach a viewer untitled. Without a catalogue (no ETL
        configured) every rated film may be picked, untitled."""
        if movie_id in self.withdrawn:
            return True
        return bool(self.titles) and movie_id not in self.titles
