"""The recommender's algorithms on hand-made rating sets whose answers are worked out by hand."""

import math
import random
import uuid

import numpy as np
import pytest

from fastapi_recom import recommender
from fastapi_recom.recommender import (
    STRATEGY_NEIGHBOURS,
    STRATEGY_POPULAR,
    RatingMatrix,
    Strategy,
    TitleCache,
    column_dtype,
)

A, B, C, D, E = (uuid.UUID(int=i) for i in range(1, 6))
M1, M2, M3, M4, M5, M6, M7 = (uuid.UUID(int=100 + i) for i in range(1, 8))

# A rated m1 m2 m3. Binary cosine with A: B = 3/(sqrt3*sqrt4) = 0.8660 (m1 m2 m3 m4),
# D = 2/(sqrt3*sqrt4) = 0.5774 (m2 m3 m5 m6), C = 1/(sqrt3*sqrt2) = 0.4082 (m1 m5),
# E shares nothing with A (m6 only).
RATINGS = [
    (A, M1, 8),
    (A, M2, 6),
    (A, M3, 10),
    (B, M1, 8),
    (B, M2, 6),
    (B, M3, 10),
    (B, M4, 8),
    (D, M2, 4),
    (D, M3, 8),
    (D, M5, 6),
    (D, M6, 4),
    (C, M1, 6),
    (C, M5, 10),
    (E, M6, 2),
]
BINARY = Strategy(neighbours=3, min_ratings=1, popular_min_ratings=1, prior_votes=2.0)
SQRT3 = math.sqrt(3)


def matrix() -> RatingMatrix:
    return RatingMatrix.from_triples(RATINGS)


def row_of(m: RatingMatrix, user: uuid.UUID) -> int:
    row = m.user_index.get(user)
    assert row is not None
    return row


def test_neighbours_are_ranked_by_binary_cosine() -> None:
    m = matrix()
    rows, sims = m.neighbours(row_of(m, A), BINARY)
    assert [m.user_ids[r] for r in rows] == [B, D, C]
    assert sims.tolist() == pytest.approx(
        [3 / (SQRT3 * 2), 2 / (SQRT3 * 2), 1 / (SQRT3 * math.sqrt(2))]
    )


def test_neighbours_are_ranked_by_score_cosine_when_configured() -> None:
    m = matrix()
    strategy = Strategy(neighbours=3, binary_similarity=False, min_ratings=1)
    rows, sims = m.neighbours(row_of(m, A), strategy)
    a = math.sqrt(8**2 + 6**2 + 10**2)
    b = math.sqrt(8**2 + 6**2 + 10**2 + 8**2)
    d = math.sqrt(4**2 + 8**2 + 6**2 + 4**2)
    c = math.sqrt(6**2 + 10**2)
    expected = {B: 200 / (a * b), D: (6 * 4 + 10 * 8) / (a * d), C: 8 * 6 / (a * c)}
    ranked = sorted(expected, key=lambda u: -expected[u])
    assert [m.user_ids[r] for r in rows] == ranked
    assert sims.tolist() == pytest.approx([expected[u] for u in ranked])


def test_recommend_orders_films_by_summed_neighbour_similarity() -> None:
    result = matrix().recommend(A, 3, BINARY)
    assert result.strategy == STRATEGY_NEIGHBOURS
    # m5: D + C; m4: B; m6: D.
    assert [p.movie_id for p in result.picks] == [M5, M4, M6]
    b, d, c = 3 / (SQRT3 * 2), 2 / (SQRT3 * 2), 1 / (SQRT3 * math.sqrt(2))
    assert [p.score for p in result.picks] == [round(d + c, 4), round(b, 4), round(d, 4)]
    assert [(p.neighbours, p.neighbour_mean_score) for p in result.picks] == [
        (2, 8.0),
        (1, 8.0),
        (1, 4.0),
    ]
    assert result.picks[0].reason == "2 viewers with similar taste rated it, average 8.0/10"
    assert result.picks[2].reason == "1 viewer with similar taste rated it, average 4.0/10"


def test_recommend_weights_votes_by_score_when_configured() -> None:
    strategy = Strategy(neighbours=3, binary_votes=False, min_ratings=1, popular_min_ratings=1)
    result = matrix().recommend(A, 3, strategy)
    b, d, c = 3 / (SQRT3 * 2), 2 / (SQRT3 * 2), 1 / (SQRT3 * math.sqrt(2))
    assert [p.movie_id for p in result.picks] == [M5, M4, M6]
    assert [p.score for p in result.picks] == [
        round(6 * d + 10 * c, 4),
        round(8 * b, 4),
        round(4 * d, 4),
    ]


def test_recommend_tops_up_with_popular_films_when_neighbours_run_out() -> None:
    result = matrix().recommend(
        A, 3, Strategy(neighbours=1, min_ratings=1, popular_min_ratings=1, prior_votes=2.0)
    )
    # The only neighbour, B, offers m4; the rest comes from the Bayesian ranking of unrated films.
    assert [p.source for p in result.picks] == ["neighbours", "popular", "popular"]
    assert [p.movie_id for p in result.picks] == [M4, M5, M6]


def test_general_ranks_by_bayesian_average_not_raw_mean() -> None:
    # m7 has a single 10; m1 three 8s, 6 and 10 -> its Bayesian average beats m7's.
    m = RatingMatrix.from_triples([*RATINGS, (E, M7, 10)])
    strategy = Strategy(prior_votes=2.0, popular_min_ratings=1)
    mean = sum(s for *_, s in [*RATINGS, (E, M7, 10)]) / (len(RATINGS) + 1)
    bayes = {
        M1: (2 * mean + 8 + 8 + 6) / 5,
        M2: (2 * mean + 6 + 6 + 4) / 5,
        M3: (2 * mean + 10 + 10 + 8) / 5,
        M4: (2 * mean + 8) / 3,
        M5: (2 * mean + 6 + 10) / 4,
        M6: (2 * mean + 4 + 2) / 4,
        M7: (2 * mean + 10) / 3,
    }
    expected = sorted(bayes, key=lambda movie: -bayes[movie])
    picks = m.general(7, strategy)
    assert [p.movie_id for p in picks] == expected
    assert [p.score for p in picks] == [round(bayes[movie], 4) for movie in expected]
    assert picks[0].movie_id == M3
    assert picks[0].reason == "popular: 3 viewers rated it, average 9.3/10"


def test_recommend_gives_popular_films_to_unknown_and_new_viewers() -> None:
    m = matrix()
    unknown = m.recommend(uuid.uuid4(), 2, BINARY)
    assert unknown.strategy == STRATEGY_POPULAR
    assert [p.movie_id for p in unknown.picks] == [p.movie_id for p in m.general(2, BINARY)]
    m.apply(uuid.UUID(int=9), M3, 10)
    newcomer = m.recommend(uuid.UUID(int=9), 3, Strategy(min_ratings=2, popular_min_ratings=1))
    assert newcomer.strategy == STRATEGY_POPULAR
    assert M3 not in [p.movie_id for p in newcomer.picks]


def test_recommend_never_returns_rated_or_excluded_films() -> None:
    result = matrix().recommend(A, 10, BINARY, exclude=[M5, uuid.uuid4()])
    ids = [p.movie_id for p in result.picks]
    assert ids == [M4, M6]
    assert not {M1, M2, M3, M5} & set(ids)


def test_similar_movies_ranks_by_column_cosine() -> None:
    m = matrix()
    # m1 raters {A, B, C}; m2 {A, B, D}: 2/3; m3 {A, B, D}: 2/3; m4 {B}: 1/sqrt3;
    # m5 {D, C}: 1/sqrt6; m6 {D, E}: 0.
    similar = m.similar_movies(M1, 10, BINARY)
    assert similar is not None
    assert [(s.movie_id, s.similarity, s.common_viewers) for s in similar] == [
        (M2, round(2 / 3, 4), 2),
        (M3, round(2 / 3, 4), 2),
        (M4, round(1 / SQRT3, 4), 1),
        (M5, round(1 / math.sqrt(6), 4), 1),
    ]
    assert m.similar_movies(uuid.uuid4(), 10, BINARY) is None


def test_apply_is_idempotent_and_updates_statistics() -> None:
    m = matrix()
    assert m.apply(A, M4, 9) is True
    assert m.apply(A, M4, 9) is False
    assert m.user_count[row_of(m, A)] == 4
    assert m.apply(A, M4, 0) is True
    assert m.apply(A, M4, 0) is False
    assert m.user_count[row_of(m, A)] == 3
    assert m.overlay_size == 0
    assert m.apply(A, M1, 0) is True
    assert [movie for movie, _ in m.user_ratings(A)] == [M2, M3]


@pytest.mark.parametrize("row_block", [recommender.ROW_BLOCK, 8])
@pytest.mark.parametrize("merge", [False, True])
def test_overlay_gives_the_same_answers_as_a_rebuilt_matrix(
    merge: bool, row_block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blocks of 8 viewers: the film-major layout of a catalogue with more than 65,536 viewers
    # (several blocks per film), on a matrix small enough to check every answer.
    monkeypatch.setattr(recommender, "ROW_BLOCK", row_block)
    rng = random.Random(7)
    users = [uuid.UUID(int=1000 + i) for i in range(40)]
    movies = [uuid.UUID(int=5000 + i) for i in range(60)]
    state = {(u, mv): rng.randint(1, 10) for u in users for mv in movies if rng.random() < 0.2}
    live = RatingMatrix.from_triples((u, mv, s) for (u, mv), s in state.items())
    # Changes, deletions, new viewers and new films, applied as the refresher would.
    newcomers = [uuid.UUID(int=2000 + i) for i in range(5)]
    new_movies = [uuid.UUID(int=6000 + i) for i in range(5)]
    for _ in range(400):
        key = (rng.choice(users + newcomers), rng.choice(movies + new_movies))
        score = rng.choice([0, 0, *range(1, 11)])
        live.apply(*key, score)
        if score:
            state[key] = score
        else:
            state.pop(key, None)
    if merge:
        assert live.merge() > 0
        assert live.overlay_size == 0
    rebuilt = RatingMatrix.from_triples((u, mv, s) for (u, mv), s in state.items())
    assert rebuilt._base.m_blocks == -(-rebuilt.n_users // row_block)
    for strategy in (
        Strategy(neighbours=10, min_ratings=1, popular_min_ratings=1),
        Strategy(neighbours=10, binary_similarity=False, binary_votes=False, min_ratings=1),
    ):
        for user in users[:10] + newcomers:
            got = live.recommend(user, 10, strategy).picks
            want = rebuilt.recommend(user, 10, strategy).picks
            assert [p.score for p in got] == pytest.approx([p.score for p in want], abs=1e-4)
            # Ties go to the smaller id, even where the two sums differ in their last bits.
            assert [p.movie_id for p in got] == [p.movie_id for p in want]
            # The evidence too, for the films both lists hold: the overlay's corrections
            # (-old, +new) count and average like a rebuild.
            evidence = {p.movie_id: (p.neighbours, p.neighbour_mean_score, p.reason) for p in got}
            expected = {p.movie_id: (p.neighbours, p.neighbour_mean_score, p.reason) for p in want}
            both = evidence.keys() & expected.keys()
            assert len(both) >= 9
            assert {m: evidence[m] for m in both} == {m: expected[m] for m in both}
        for movie in movies[:5] + new_movies[:2]:
            got_similar = live.similar_movies(movie, 5, strategy) or []
            want_similar = rebuilt.similar_movies(movie, 5, strategy) or []
            assert [s.similarity for s in got_similar] == [s.similarity for s in want_similar]
    assert sorted(live.user_ratings(users[0])) == sorted(rebuilt.user_ratings(users[0]))


def reference_neighbours(
    ratings: dict[uuid.UUID, dict[uuid.UUID, int]], user: uuid.UUID, k: int, binary: bool
) -> list[tuple[uuid.UUID, float]]:
    """The definition, one viewer at a time: cosine, ties to the smaller viewer id."""
    mine = ratings[user]
    weight = (lambda score: 1) if binary else (lambda score: score)
    own = math.sqrt(sum(weight(s) ** 2 for s in mine.values()))
    sims = []
    for other, theirs in ratings.items():
        dot = sum(weight(mine[m]) * weight(s) for m, s in theirs.items() if m in mine)
        if other != user and dot > 0:
            norm = math.sqrt(sum(weight(s) ** 2 for s in theirs.values()))
            sims.append((-(dot / (norm * own)), other))
    return [(other, -negative) for negative, other in sorted(sims)[:k]]


@pytest.mark.parametrize("binary", [True, False])
# Dense: most viewers share a film with anyone; sparse: few do (the top-k takes another path).
@pytest.mark.parametrize(("films", "density"), [(12, 0.3), (30, 0.1)])
def test_neighbours_equal_the_definition_with_ties_and_changes(
    binary: bool, films: int, density: float
) -> None:
    rng = random.Random(11)
    users = [uuid.UUID(int=3000 + i) for i in range(60)]
    movies = [uuid.UUID(int=7000 + i) for i in range(films)]
    # Few films and scores, so many viewers tie on similarity around the k-th.
    state = {u: {mv: rng.choice([2, 4]) for mv in movies if rng.random() < density} for u in users}
    state = {u: r for u, r in state.items() if r}
    m = RatingMatrix.from_triples((u, mv, s) for u, r in state.items() for mv, s in r.items())
    # Overlay changes: a viewer loses every rating (norm 0), new films, a newcomer.
    emptied = next(iter(state))
    for movie in list(state[emptied]):
        m.apply(emptied, movie, 0)
    state[emptied] = {}
    newcomer, new_movie = uuid.UUID(int=3999), uuid.UUID(int=7999)
    for user, movie, score in [
        (newcomer, movies[0], 4),
        (newcomer, new_movie, 2),
        (users[5], new_movie, 4),
    ]:
        m.apply(user, movie, score)
        state.setdefault(user, {})[movie] = score
    m.apply(uuid.UUID(int=3998), movies[1], 0)  # a deletion of nothing: a row without ratings
    in_rows = {m.user_ids[row]: state.get(m.user_ids[row], {}) for row in range(m.n_users)}
    strategy = Strategy(neighbours=7, binary_similarity=binary, max_profile=1000)
    for user in [u for u in in_rows if in_rows[u]][:25]:
        rows, sims = m.neighbours(row_of(m, user), strategy)
        got = [(m.user_ids[r], s) for r, s in zip(rows.tolist(), sims.tolist(), strict=True)]
        assert got == reference_neighbours(in_rows, user, 7, binary)


@pytest.mark.parametrize("binary", [True, False])
# 20,000 viewers: the k nearest are screened with a sample's k-th best before partitioning;
# with 40 films most viewers share one with anyone, with 2,000 films almost none do.
@pytest.mark.parametrize(("films", "density"), [(40, 0.1), (2_000, 0.002)])
def test_neighbours_among_many_viewers_equal_the_definition(
    binary: bool, films: int, density: float
) -> None:
    rng = random.Random(5)
    movies = [uuid.UUID(int=90_000 + i) for i in range(films)]
    state: dict[uuid.UUID, dict[uuid.UUID, int]] = {}
    for i in range(20_000):
        rated = {mv: rng.choice([2, 4]) for mv in rng.sample(movies, int(films * density) + 1)}
        state[uuid.UUID(int=100_000 + i)] = rated
    m = RatingMatrix.from_triples((u, mv, s) for u, r in state.items() for mv, s in r.items())
    for k in (7, 80):
        strategy = Strategy(neighbours=k, binary_similarity=binary)
        for user in rng.sample(sorted(state), 4):
            rows, sims = m.neighbours(row_of(m, user), strategy)
            got = [(m.user_ids[r], s) for r, s in zip(rows.tolist(), sims.tolist(), strict=True)]
            assert got == reference_neighbours(state, user, k, binary)


def test_film_columns_are_uint16_while_the_films_fit() -> None:
    assert column_dtype(3) is np.uint16
    assert column_dtype(65_536) is np.uint16
    assert column_dtype(65_537) is np.int32
    m = matrix()
    assert m.nbytes()["viewer-major columns"] == 2 * len(RATINGS)


def test_the_last_uint16_column_is_found_by_its_raters() -> None:
    # 65,536 films; X and Y share only the last column, 65,535 (where `col + 1` would wrap).
    x, y, z = uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)
    films = [uuid.UUID(int=10_000 + i) for i in range(65_536)]
    triples = [(z, film, 5) for film in films[:-1]]
    triples += [(x, films[-1], 8), (x, films[0], 8), (y, films[-1], 8), (y, films[1], 8)]
    m = RatingMatrix.from_triples(triples)
    assert m.n_movies == 65_536
    strategy = Strategy(neighbours=2, min_ratings=1, popular_min_ratings=1)
    for binary in (True, False):
        rows, _ = m.neighbours(row_of(m, x), Strategy(neighbours=2, binary_similarity=binary))
        assert [m.user_ids[r] for r in rows] == [y, z]
    assert m.recommend(x, 1, strategy).picks[0].movie_id == films[1]
    assert m.value(row_of(m, y), 65_535) == 8
    similar = m.similar_movies(films[-1], 2, strategy)
    assert similar is not None
    assert [s.movie_id for s in similar] == [films[0], films[1]]


def test_film_major_scores_are_held_only_once_a_score_similarity_needs_them() -> None:
    m = matrix()
    m.recommend(A, 3, BINARY)
    m.similar_movies(M1, 3, BINARY)
    assert "film-major scores" not in m.nbytes()
    score = Strategy(neighbours=3, binary_similarity=False, min_ratings=1)
    m.recommend(A, 3, score)
    assert m.nbytes()["film-major scores"] == len(RATINGS)
    m.apply(A, M4, 9)
    assert m.merge() == 1
    assert m.nbytes()["film-major scores"] == len(RATINGS) + 1


def test_viewers_beyond_the_first_row_block_are_found() -> None:
    # 65,538 viewers: the film-major rows span two blocks of 65,536 viewers.
    crowd = [uuid.UUID(int=100_000 + i) for i in range(65_538)]
    common, f1, f2, f3 = (uuid.UUID(int=900 + i) for i in range(4))
    x, y = crowd[10], crowd[-1]
    triples = [(viewer, common, 5) for viewer in crowd]
    triples += [(x, f1, 8), (y, f1, 8), (y, f2, 9), (crowd[-2], f3, 7)]
    m = RatingMatrix.from_triples(triples)
    assert row_of(m, y) == 65_537
    assert m.nbytes()["film-major rows"] == 2 * len(triples)
    for binary in (True, False):
        strategy = Strategy(neighbours=2, binary_similarity=binary, min_ratings=1)
        rows, _ = m.neighbours(row_of(m, x), strategy)
        # y shares two films with x, every other viewer one.
        assert m.user_ids[rows[0]] == y
        assert m.recommend(x, 1, strategy).picks[0].movie_id == f2
        similar = m.similar_movies(f1, 2, strategy)
        assert similar is not None
        assert [(s.movie_id, s.common_viewers) for s in similar] == [(f2, 1), (common, 2)]
    assert [movie for movie, _ in m.user_ratings(y)] == [common, f1, f2]


def copy_stream(triples: list[tuple[uuid.UUID, uuid.UUID, int]]) -> bytes:
    """A binary COPY of (user_id, movie_id, score) rows, as PostgreSQL sends it."""
    from fastapi_recom.refresher import _ROW

    rows = np.zeros(len(triples), dtype=_ROW)
    rows["fields"], rows["user_len"], rows["movie_len"], rows["score_len"] = 3, 16, 16, 2
    rows["user"] = [u.bytes for u, _, _ in triples]
    rows["movie"] = [m.bytes for _, m, _ in triples]
    rows["score"] = [s for _, _, s in triples]
    return b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8 + rows.tobytes() + b"\xff\xff"


async def test_a_load_numbers_viewers_and_films_by_id_whatever_the_stream() -> None:
    from fastapi_recom.refresher import _CopyParser

    rng = random.Random(3)
    ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(60)]
    triples = [(ids[i], ids[30 + i], rng.randint(1, 10)) for i in range(30)]
    triples += [(u, m, s) for (u, _, s), (_, m, _) in zip(triples, triples[5:], strict=False)]
    loaded = []
    for seed, chunk in [(1, 48 * 4 + 7), (2, 48 * 9), (3, 10_000)]:
        shuffled = triples[:]
        random.Random(seed).shuffle(shuffled)
        stream = copy_stream(shuffled)
        parser = _CopyParser(len(shuffled))
        parser.BLOCK = chunk  # parse every few rows, as a long stream is parsed
        for at in range(0, len(stream), chunk):
            await parser.feed(stream[at : at + chunk])
        m = parser.matrix()
        users = [m.user_ids[row] for row in range(m.n_users)]
        movies = [m.movie_ids[col] for col in range(m.n_movies)]
        assert users == sorted(users, key=lambda u: u.bytes)
        assert movies == sorted(movies, key=lambda u: u.bytes)
        assert sorted(m.user_ratings(triples[0][0])) == sorted(
            (mv, s) for u, mv, s in triples if u == triples[0][0]
        )
        loaded.append((users, m.neighbours(0, Strategy())[0].tolist()))
    assert loaded[0] == loaded[1] == loaded[2]


@pytest.mark.parametrize("history", ["loaded", "arrived newest id first"])
def test_a_long_profile_compares_its_rarest_films_ties_to_the_smaller_id(history: str) -> None:
    """Over `max_profile` films, the viewer is compared on the rarest only; among equally rare
    films those with the smaller ids are kept, on every machine and whatever order the films
    were indexed in. U rated 120 films: five that no one else rated, and 115 that one other
    viewer each rated (V_i only F_i), so the 100 kept are the five and F0..F94, and V0..V94
    are U's only neighbours."""
    user = uuid.UUID(int=50_000)
    films = [uuid.UUID(int=60_000 + i) for i in range(120)]
    lonely = set(range(100, 105))
    others = {i: uuid.UUID(int=70_000 + i) for i in range(120) if i not in lonely}
    triples = [(user, film, 6) for film in films] + [(v, films[i], 6) for i, v in others.items()]
    if history == "loaded":
        m = RatingMatrix.from_triples(triples)
    else:  # after the load, through the refresher: columns in order of arrival
        m = RatingMatrix.from_triples([])
        for u, film, score in sorted(triples, key=lambda t: t[1], reverse=True):
            m.apply(u, film, score)
    rows, sims = m.neighbours(row_of(m, user), Strategy(neighbours=200, max_profile=100))
    assert sorted(m.user_ids[r] for r in rows.tolist()) == [others[i] for i in range(95)]
    # The cosine's norms stay those of the whole profile: 1 / (sqrt(120) * 1).
    assert sims.tolist() == pytest.approx([1 / math.sqrt(120)] * 95)


@pytest.mark.parametrize("binary", [True, False])
def test_answers_do_not_depend_on_the_order_viewers_and_films_were_indexed(binary: bool) -> None:
    """A worker that loaded the ratings (indices by id) and one that received them after
    its start (indices by arrival) break every tie the same way: by id. Few films and two
    scores make equal similarities and equal film scores common."""
    rng = random.Random(3)
    users = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(80)]
    movies = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(15)]
    triples = [(u, mv, rng.choice([2, 4])) for u in users for mv in movies if rng.random() < 0.3]
    loaded = RatingMatrix.from_triples(sorted(triples))
    arrived = RatingMatrix.from_triples([])
    rng.shuffle(triples)
    for triple in triples:
        arrived.apply(*triple)
    strategy = Strategy(neighbours=5, binary_similarity=binary, max_profile=4)

    def answers(m: RatingMatrix) -> list[object]:
        out: list[object] = [[p.movie_id for p in m.general(8, strategy)]]
        for user in users:
            picks = m.recommend(user, 6, strategy).picks
            out.append([(p.movie_id, p.neighbours, p.score) for p in picks])
        for movie in movies:
            similar = m.similar_movies(movie, 6, strategy) or []
            out.append([(s.movie_id, s.common_viewers, s.similarity) for s in similar])
        return out

    assert answers(arrived) == answers(loaded)


def test_withdrawn_films_are_never_picked_but_their_ratings_still_count() -> None:
    m = RatingMatrix.from_triples(RATINGS)
    strategy = Strategy(neighbours=2, min_ratings=1, popular_min_ratings=1)
    assert M4 in [p.movie_id for p in m.recommend(A, 3, strategy).picks]
    late = uuid.UUID(int=999)  # withdrawn before anyone rated it
    catalogue = TitleCache()  # lists no film: only the withdrawal hides one
    m.use_catalogue(catalogue)
    catalogue.withdrawn.update([M4, late])
    m.catalogue_changed([M4, late])

    picks = [p.movie_id for p in m.recommend(A, 3, strategy).picks]
    assert M4 not in picks
    # B is still A's nearest neighbour: through m1 m2 m3, and m4 still counts in B's norm.
    rows, sims = m.neighbours(row_of(m, A), strategy)
    assert m.user_ids[int(rows[0])] == B
    assert float(sims[0]) == pytest.approx(3 / (math.sqrt(3) * math.sqrt(4)))
    assert M4 not in [p.movie_id for p in m.general(10, strategy)]
    assert M4 not in [s.movie_id for s in m.similar_movies(M1, 10, strategy) or []]
    m.apply(C, late, 8)
    assert late not in [p.movie_id for p in m.general(10, strategy)]

    catalogue.withdrawn.clear()
    m.catalogue_changed([M4, late])
    assert M4 in [p.movie_id for p in m.recommend(A, 3, strategy).picks]
    assert late in [p.movie_id for p in m.general(10, strategy)]


def test_once_the_catalogue_lists_films_those_it_does_not_list_are_never_picked() -> None:
    m = RatingMatrix.from_triples(RATINGS)
    strategy = Strategy(neighbours=3, min_ratings=1, popular_min_ratings=1)
    catalogue = TitleCache()
    m.use_catalogue(catalogue)
    # No catalogue yet (no ETL): every rated film may be picked, untitled.
    assert [p.movie_id for p in m.recommend(A, 3, strategy).picks] == [M5, M4, M6]

    catalogue.titles[M6] = "Listed"
    m.catalogue_changed([M6])
    # m5 and m4 are unknown to it: A gets m6, then the popular top-up finds nothing listed.
    assert [p.movie_id for p in m.recommend(A, 3, strategy).picks] == [M6]
    assert [p.movie_id for p in m.general(10, strategy)] == [M6]
    assert [s.movie_id for s in m.similar_movies(M2, 10, strategy) or []] == [M6]
    # Their ratings still count: D stays A's second neighbour through m2 and m3.
    rows, _ = m.neighbours(row_of(m, A), strategy)
    assert [m.user_ids[int(r)] for r in rows] == [B, D, C]
    # A film rated for the first time is judged by the catalogue as it is then.
    invented, listed_late = uuid.UUID(int=998), uuid.UUID(int=997)
    m.apply(B, invented, 9)
    assert invented not in [p.movie_id for p in m.recommend(A, 5, strategy).picks]
    catalogue.titles[listed_late] = "Arrived"
    m.catalogue_changed([listed_late])
    m.apply(B, listed_late, 9)
    assert listed_late in [p.movie_id for p in m.recommend(A, 5, strategy).picks]

    catalogue.titles.update({M4: "Four", M5: "Five"})
    m.catalogue_changed([M4, M5])
    # B (now 6 films) ties m4 and the late film; the smaller id goes first.
    assert [p.movie_id for p in m.recommend(A, 3, strategy).picks] == [M5, M4, listed_late]


def test_deleting_ratings_of_unknown_films_or_viewers_leaves_the_matrix_as_it_was() -> None:
    """DELETE /ugc/v1/ratings/{any id} answers 202, and the refresher applies score 0: no row
    or column is made for it, as every later request would pay per film for it."""
    m = matrix()
    strategy = Strategy(neighbours=3, min_ratings=1, popular_min_ratings=1)

    def answers() -> list[object]:
        out: list[object] = [[(p.movie_id, p.score) for p in m.general(10, strategy)]]
        for user in (A, B, C, D, E):
            out.append([(p.movie_id, p.score) for p in m.recommend(user, 5, strategy).picks])
            out.append(m.user_ratings(user))
        return out

    before = answers()
    shape = (m.n_users, m.n_movies, len(m.hidden), m.nbytes())
    rng = random.Random(5)
    for _ in range(500):
        unknown_film, unknown_viewer = (uuid.UUID(int=rng.getrandbits(128)) for _ in range(2))
        assert m.apply(A, unknown_film, 0) is False
        assert m.apply(unknown_viewer, M1, 0) is False
        assert m.apply(unknown_viewer, unknown_film, 0) is False
    assert (m.n_users, m.n_movies, len(m.hidden), m.nbytes()) == shape
    assert (m.version, m.overlay_size) == (0, 0)
    assert answers() == before
    # A rating of a new film still makes its column, and deleting it again is a change.
    late = uuid.UUID(int=rng.getrandbits(128))
    assert m.apply(A, late, 7) is True
    assert m.n_movies == shape[1] + 1
    assert m.apply(A, late, 0) is True
    assert [movie for movie, _ in m.user_ratings(A)] == [M1, M2, M3]


def test_a_viewers_ratings_are_listed_by_film_id_whatever_order_the_films_were_indexed() -> None:
    """A worker that loaded the ratings numbers films by id, one that received them later by
    arrival: both list a viewer's ratings by film id, so pages served by either agree."""
    rng = random.Random(8)
    user, other = uuid.UUID(int=rng.getrandbits(128)), uuid.UUID(int=rng.getrandbits(128))
    films = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(40)]
    triples = [(user, film, rng.randint(1, 10)) for film in films]
    triples += [(other, film, 5) for film in films[::3]]
    loaded = RatingMatrix.from_triples(sorted(triples, key=lambda t: t[1]))
    arrived = RatingMatrix.from_triples(triples[-5:])
    for triple in reversed(triples):
        arrived.apply(*triple)
    assert [loaded.movie_ids[c] for c in range(40)] != [arrived.movie_ids[c] for c in range(40)]
    by_id = sorted((film, score) for u, film, score in triples if u == user)
    assert loaded.user_ratings(user) == by_id
    assert arrived.user_ratings(user) == by_id
    # Through the overlay and after a merge alike.
    arrived.apply(user, films[0], 0)
    loaded.apply(user, films[0], 0)
    assert (
        arrived.user_ratings(user)
        == loaded.user_ratings(user)
        == [r for r in by_id if r[0] != films[0]]
    )
    arrived.merge()
    assert arrived.user_ratings(user) == loaded.user_ratings(user)
