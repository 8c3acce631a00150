"""The recommender's HTTP API on real PostgreSQL and RabbitMQ, ratings written straight into `rating`."""

import math
import uuid

import jwt

from contracts.events import DigestRequested
from tests.recom.recommender_support import (
    clear_ratings,
    generated_events,
    hand_made_set,
    is_ready,
    listed_title,
    put_ratings,
    put_titles,
    recom_client,
)
from tests.support import bearer, make_token, wait_for

SQRT3 = math.sqrt(3)
B_SIM, D_SIM, C_SIM = 3 / (SQRT3 * 2), 2 / (SQRT3 * 2), 1 / (SQRT3 * math.sqrt(2))


async def test_user_recommendations_rank_neighbour_picks_with_reasons() -> None:
    users, movies, ratings = hand_made_set()
    await put_ratings(ratings)
    await put_titles({movies["m5"]: "Film Five", movies["m4"]: "Film Four"})
    async with recom_client() as client:
        response = await client.get(
            f"/recom/v1/user/{users['A']}",
            params={"limit": 3},
            headers=bearer(make_token(users["A"])),
        )
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == str(users["A"])
    assert body["strategy"] == "user_knn_cosine"
    assert body["generated_at"]
    assert body["recommendations"] == [
        {
            "movie_id": str(movies["m5"]),
            "title": "Film Five",
            "score": round(D_SIM + C_SIM, 4),
            "reason": "2 viewers with similar taste rated it, average 8.0/10",
            "source": "neighbours",
            "neighbours": 2,
            "neighbour_mean_score": 8.0,
            "ratings": 2,
            "mean_score": 8.0,
        },
        {
            "movie_id": str(movies["m4"]),
            "title": "Film Four",
            "score": round(B_SIM, 4),
            "reason": "1 viewer with similar taste rated it, average 8.0/10",
            "source": "neighbours",
            "neighbours": 1,
            "neighbour_mean_score": 8.0,
            "ratings": 1,
            "mean_score": 8.0,
        },
        {
            "movie_id": str(movies["m6"]),
            "title": listed_title(movies["m6"]),
            "score": round(D_SIM, 4),
            "reason": "1 viewer with similar taste rated it, average 4.0/10",
            "source": "neighbours",
            "neighbours": 1,
            "neighbour_mean_score": 4.0,
            "ratings": 2,
            "mean_score": 3.0,
        },
    ]


async def test_user_recommendations_skip_excluded_films_repeated_or_comma_separated() -> None:
    users, movies, ratings = hand_made_set()
    await put_ratings(ratings)
    token = make_token(users["A"])
    async with recom_client() as client:
        repeated = await client.get(
            f"/recom/v1/user/{users['A']}?limit=2&exclude={movies['m5']}&exclude={movies['m1']}",
            headers=bearer(token),
        )
        commas = await client.get(
            f"/recom/v1/user/{users['A']}?limit=2&exclude={movies['m5']},{movies['m4']}",
            headers=bearer(token),
        )
    assert [r["movie_id"] for r in repeated.json()["recommendations"]] == [
        str(movies["m4"]),
        str(movies["m6"]),
    ]
    ids = [r["movie_id"] for r in commas.json()["recommendations"]]
    assert ids[0] == str(movies["m6"])
    assert not {str(movies[m]) for m in ("m1", "m2", "m3", "m4", "m5")} & set(ids)


async def test_user_recommendations_forbidden_for_someone_else() -> None:
    users, _, ratings = hand_made_set()
    await put_ratings(ratings)
    async with recom_client() as client:
        response = await client.get(
            f"/recom/v1/user/{users['A']}", headers=bearer(make_token(users["B"]))
        )
        ratings_response = await client.get(
            f"/recom/v1/user/{users['A']}/ratings", headers=bearer(make_token(users["B"]))
        )
    assert response.status_code == 403
    assert response.json() == {"detail": "FORBIDDEN"}
    assert ratings_response.status_code == 403
    assert ratings_response.json() == {"detail": "FORBIDDEN"}


async def test_user_recommendations_allowed_for_a_superuser() -> None:
    users, movies, ratings = hand_made_set()
    await put_ratings(ratings)
    async with recom_client() as client:
        response = await client.get(
            f"/recom/v1/user/{users['A']}?limit=1",
            headers=bearer(make_token(uuid.uuid4(), superuser=True)),
        )
    assert response.status_code == 200
    assert [r["movie_id"] for r in response.json()["recommendations"]] == [str(movies["m5"])]


async def test_user_recommendations_reject_missing_token_and_bad_input() -> None:
    user = uuid.uuid4()
    token = bearer(make_token(user))
    async with recom_client() as client:
        anonymous = await client.get(f"/recom/v1/user/{user}")
        zero = await client.get(f"/recom/v1/user/{user}?limit=0", headers=token)
        too_many = await client.get(f"/recom/v1/user/{user}?limit=101", headers=token)
        bad_exclude = await client.get(f"/recom/v1/user/{user}?exclude=nope", headers=token)
        bad_user = await client.get("/recom/v1/user/nope", headers=token)
    assert anonymous.status_code == 401
    assert anonymous.json() == {"detail": "NOT_AUTHENTICATED"}
    for response in (zero, too_many, bad_exclude, bad_user):
        assert response.status_code == 422
        assert response.json()["detail"] == "VALIDATION_ERROR"
    assert bad_exclude.json()["errors"][0]["loc"] == ["query", "exclude"]


async def test_cold_start_viewers_get_bayesian_popular_films() -> None:
    await clear_ratings()
    viewers = [uuid.uuid4() for _ in range(6)]
    loved, liked, single = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    # `single` has one 10 but too few raters to be listed; `loved` beats `liked`.
    await put_ratings(
        [(v, loved, 10) for v in viewers]
        + [(v, liked, 7) for v in viewers]
        + [(viewers[0], single, 10)]
    )
    newcomer = uuid.uuid4()
    async with recom_client() as client:
        response = await client.get(
            f"/recom/v1/user/{newcomer}", headers=bearer(make_token(newcomer))
        )
        general = await client.get("/recom/v1/general?limit=5")
    assert response.status_code == 200
    body = response.json()
    assert body["strategy"] == "popular"
    assert [r["movie_id"] for r in body["recommendations"]] == [str(loved), str(liked)]
    mean = (6 * 10 + 6 * 7 + 10) / 13
    assert body["recommendations"][0]["score"] == round((20 * mean + 60) / 26, 4)
    assert body["recommendations"][0]["reason"] == "popular: 6 viewers rated it, average 10.0/10"
    assert general.status_code == 200
    assert general.json()["recommendations"] == body["recommendations"]
    assert general.json()["strategy"] == "popular"


async def test_general_validates_limit() -> None:
    async with recom_client() as client:
        response = await client.get("/recom/v1/general?limit=0")
    assert response.status_code == 422
    assert response.json()["detail"] == "VALIDATION_ERROR"


async def test_user_ratings_lists_what_recom_holds_paged() -> None:
    users, movies, ratings = hand_made_set()
    await put_ratings(ratings, listed=False)  # ratings of films the catalogue lacks count too
    await put_titles({movies["m1"]: "Film One"})
    async with recom_client() as client:
        first = await client.get(
            f"/recom/v1/user/{users['B']}/ratings?size=3", headers=bearer(make_token(users["B"]))
        )
        second = await client.get(
            f"/recom/v1/user/{users['B']}/ratings?size=3&page=2",
            headers=bearer(make_token(users["B"])),
        )
    assert first.status_code == 200
    held = {r["movie_id"]: (r["title"], r["score"]) for r in first.json()["items"]}
    held.update({r["movie_id"]: (r["title"], r["score"]) for r in second.json()["items"]})
    assert held == {
        str(movies["m1"]): ("Film One", 8),
        str(movies["m2"]): (None, 6),
        str(movies["m3"]): (None, 10),
        str(movies["m4"]): (None, 8),
    }
    assert (first.json()["total"], first.json()["page"], first.json()["size"]) == (4, 1, 3)
    assert len(second.json()["items"]) == 1


async def test_user_ratings_pages_follow_film_ids_whatever_order_the_films_arrived_in() -> None:
    """Films held at start-up are indexed by id, films rated later by arrival; the pages follow
    the film ids either way, so paging across replicas neither repeats nor skips a film."""
    user = uuid.uuid4()
    films = sorted(uuid.uuid4() for _ in range(6))
    await put_ratings([(user, film, 6) for film in films[::2]])
    headers = bearer(make_token(user))
    async with recom_client() as client:
        await wait_for(lambda: is_ready(client), timeout=15)
        for held, film in enumerate(reversed(films[1::2]), start=4):
            await put_ratings([(user, film, 7)])

            async def arrived(held: int = held) -> bool:
                page = await client.get(f"/recom/v1/user/{user}/ratings", headers=headers)
                return page.json()["total"] == held

            await wait_for(arrived, timeout=10)
        pages = [
            await client.get(f"/recom/v1/user/{user}/ratings?size=4&page={page}", headers=headers)
            for page in (1, 2)
        ]
    assert [r.status_code for r in pages] == [200, 200]
    listed = [(item["movie_id"], item["score"]) for r in pages for item in r.json()["items"]]
    assert listed == [(str(film), 6 if i % 2 == 0 else 7) for i, film in enumerate(films)]


async def test_similar_movies_ranked_by_column_cosine_and_404_when_unknown() -> None:
    users, movies, ratings = hand_made_set()
    await put_ratings(ratings)
    await put_titles({movies["m2"]: "Film Two"})
    # Rated, but not in the catalogue, which lists films: not found, as it is never picked.
    unlisted = uuid.uuid4()
    await put_ratings([(users["A"], unlisted, 7), (users["B"], unlisted, 9)], listed=False)
    async with recom_client() as client:
        response = await client.get(f"/recom/v1/movies/{movies['m1']}/similar?limit=3")
        unknown = await client.get(f"/recom/v1/movies/{uuid.uuid4()}/similar")
        hidden = await client.get(f"/recom/v1/movies/{unlisted}/similar")
    assert response.status_code == 200
    body = response.json()
    assert body["movie_id"] == str(movies["m1"])
    similar = [(s["movie_id"], s["similarity"], s["common_viewers"]) for s in body["similar"]]
    # m2 and m3 tie at 2/3 (order between them is by index), then m4.
    assert {similar[0][0], similar[1][0]} == {str(movies["m2"]), str(movies["m3"])}
    assert [s[1:] for s in similar] == [
        (round(2 / 3, 4), 2),
        (round(2 / 3, 4), 2),
        (round(1 / SQRT3, 4), 1),
    ]
    assert similar[2][0] == str(movies["m4"])
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "MOVIE_NOT_FOUND"}
    assert hidden.status_code == 404
    assert hidden.json() == {"detail": "MOVIE_NOT_FOUND"}


async def test_request_publishes_recommendations_generated() -> None:
    users, movies, ratings = hand_made_set()
    await put_ratings(ratings)
    async with generated_events() as events, recom_client() as client:
        await wait_for(lambda: is_ready(client), timeout=15)
        response = await client.get(
            f"/recom/v1/user/{users['A']}?limit=2", headers=bearer(make_token(users["A"]))
        )
        assert response.status_code == 200

        async def published() -> bool:
            return any(e["user_id"] == str(users["A"]) for e in events)

        await wait_for(published, timeout=10)
    event = next(e for e in events if e["user_id"] == str(users["A"]))
    assert event["trigger"] == "request"
    assert event["strategy"] == "user_knn_cosine"
    assert [i["movie_id"] for i in event["items"]] == [str(movies["m5"]), str(movies["m4"])]
    assert event["items"][0]["score"] == round(D_SIM + C_SIM, 4)
    assert DigestRequested.routing_key == "notifications.digest.requested"


async def test_revoked_token_is_refused_at_once_from_the_mirrored_revocations() -> None:
    from redis.asyncio import Redis

    from contracts.revocations import record_revocation
    from contracts.tokens import REVOKED_JTI_KEY
    from fastapi_recom.config import Settings

    user = uuid.uuid4()
    token = make_token(user)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    redis = Redis.from_url(Settings().redis_url)
    try:
        async with recom_client() as client:
            first = await client.get(f"/recom/v1/user/{user}", headers=bearer(token))
            assert first.status_code == 200
            # As fastapi_auth's logout writes it; without the key, only the mirror knows.
            await record_revocation(redis, user, jti=jti, keep_seconds=60)
            await redis.delete(REVOKED_JTI_KEY.format(jti=jti))

            async def refused() -> bool:
                response = await client.get(f"/recom/v1/user/{user}", headers=bearer(token))
                return response.status_code == 401

            await wait_for(refused, timeout=1, interval=0.005)
            response = await client.get(f"/recom/v1/user/{user}", headers=bearer(token))
    finally:
        await redis.aclose()
    assert response.json() == {"detail": "TOKEN_REVOKED"}
