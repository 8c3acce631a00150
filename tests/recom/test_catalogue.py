"""Catalogue endpoints: title search, genre filter, paging, one film with its people, errors."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db import make_engine, make_sessionmaker
from fastapi_recom.config import get_settings
from fastapi_recom.main import app
from fastapi_recom.models import Genre, Movie, MovieGenre, MoviePerson, Person


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[AsyncClient]:
    async with (
        LifespanManager(app) as manager,
        AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://test") as client,
    ):
        yield client


@pytest.fixture
async def session() -> AsyncIterator[AsyncSession]:
    """Rows created here are removed afterwards (movies, genres, persons it made)."""
    engine = make_engine(get_settings().database_url, pool_size=1)
    async with make_sessionmaker(engine)() as session:
        yield session
        created = session.info.get("created", [])
        movies = [row.movie_id for row in created if isinstance(row, Movie)]
        # The link tables have no foreign keys (the ETL keeps them whole): no cascade.
        await session.execute(delete(MovieGenre).where(MovieGenre.movie_id.in_(movies)))
        await session.execute(delete(MoviePerson).where(MoviePerson.movie_id.in_(movies)))
        for model, key in ((Movie, "movie_id"), (Genre, "genre_id"), (Person, "person_id")):
            ids = [getattr(row, key) for row in created if isinstance(row, model)]
            await session.execute(delete(model).where(getattr(model, key).in_(ids)))
        await session.commit()
    await engine.dispose()


def _track(session: AsyncSession, row: object) -> None:
    session.add(row)
    session.info.setdefault("created", []).append(row)


async def create_genre(session: AsyncSession, name: str) -> Genre:
    genre = Genre(genre_id=uuid.uuid4(), name=name)
    _track(session, genre)
    await session.commit()
    return genre


async def create_person(session: AsyncSession, full_name: str) -> Person:
    person = Person(person_id=uuid.uuid4(), full_name=full_name)
    _track(session, person)
    await session.commit()
    return person


async def create_movie(
    session: AsyncSession,
    title: str,
    *,
    genres: Sequence[Genre] = (),
    persons: Sequence[tuple[Person, str]] = (),
    **overrides: object,
) -> Movie:
    movie = Movie(movie_id=uuid.uuid4(), title=title, **overrides)
    _track(session, movie)
    await session.flush()
    session.add_all(MovieGenre(movie_id=movie.movie_id, genre_id=g.genre_id) for g in genres)
    session.add_all(
        MoviePerson(movie_id=movie.movie_id, person_id=p.person_id, role=role)
        for p, role in persons
    )
    await session.commit()
    return movie


def token() -> str:
    """A title word no other test's film carries."""
    return uuid.uuid4().hex[:10]


async def test_search_matches_part_of_title_case_insensitively(
    client: AsyncClient, session: AsyncSession
) -> None:
    word = token()
    drama = await create_genre(session, f"Drama {word}")
    found = await create_movie(
        session, f"The {word.upper()} Story", genres=[drama], release_year=1999, rating=8.1
    )
    await create_movie(session, "Something else entirely")

    response = await client.get("/recom/v1/movies", params={"search": word})

    assert response.status_code == 200
    assert response.json() == {
        "items": [
            {
                "movie_id": str(found.movie_id),
                "title": f"The {word.upper()} Story",
                "release_year": 1999,
                "rating": 8.1,
                "type": None,
                "genres": [f"Drama {word}"],
            }
        ],
        "page": 1,
        "size": 20,
        "total": 1,
    }


async def test_search_treats_like_wildcards_literally(
    client: AsyncClient, session: AsyncSession
) -> None:
    word = token()
    literal = await create_movie(session, f"{word} 100% Love")
    await create_movie(session, f"{word} 100 Days")

    response = await client.get("/recom/v1/movies", params={"search": f"{word} 100%"})

    assert response.status_code == 200
    assert [m["movie_id"] for m in response.json()["items"]] == [str(literal.movie_id)]


async def test_genre_filter_returns_only_films_of_that_genre_in_any_case(
    client: AsyncClient, session: AsyncSession
) -> None:
    word = token()
    western = await create_genre(session, f"Western {word}")
    comedy = await create_genre(session, f"Comedy {word}")
    both = await create_movie(session, f"{word} Blazing Saddles", genres=[western, comedy])
    only = await create_movie(session, f"{word} Rio Bravo", genres=[western])
    await create_movie(session, f"{word} Airplane", genres=[comedy])

    response = await client.get(
        "/recom/v1/movies", params={"genre": f"WESTERN {word.upper()}", "search": word}
    )

    assert response.status_code == 200
    body = response.json()
    assert [m["movie_id"] for m in body["items"]] == [str(both.movie_id), str(only.movie_id)]
    assert body["items"][0]["genres"] == [f"Comedy {word}", f"Western {word}"]
    assert body["total"] == 2


async def test_an_empty_search_box_or_genre_lists_like_no_filter(
    client: AsyncClient, session: AsyncSession
) -> None:
    """What a front end's form sends when its fields are empty: `search=&genre=`."""
    await create_movie(session, f"{token()} Unfiltered")
    everything = (await client.get("/recom/v1/movies", params={"size": 100})).json()

    response = await client.get(
        "/recom/v1/movies", params={"search": "", "genre": "  ", "size": 100}
    )

    assert response.status_code == 200
    assert response.json() == everything
    assert everything["total"] > 0


async def test_paging_splits_results_in_title_order(
    client: AsyncClient, session: AsyncSession
) -> None:
    word = token()
    movies = [await create_movie(session, f"{word} part {n}") for n in (3, 1, 5, 2, 4)]
    by_title = sorted(movies, key=lambda m: m.title)

    pages = [
        (await client.get("/recom/v1/movies", params={"search": word, "page": p, "size": 2})).json()
        for p in (1, 2, 3, 4)
    ]

    assert [[m["title"] for m in page["items"]] for page in pages] == [
        [m.title for m in by_title[0:2]],
        [m.title for m in by_title[2:4]],
        [by_title[4].title],
        [],
    ]
    assert {page["total"] for page in pages} == {5}
    assert [page["page"] for page in pages] == [1, 2, 3, 4]


async def test_movie_detail_lists_genres_and_persons_by_role(
    client: AsyncClient, session: AsyncSession
) -> None:
    word = token()
    noir = await create_genre(session, f"Noir {word}")
    director = await create_person(session, "Billy Wilder")
    actor = await create_person(session, "Barbara Stanwyck")
    other_actor = await create_person(session, "Fred MacMurray")
    movie = await create_movie(
        session,
        f"{word} Double Indemnity",
        genres=[noir],
        persons=[
            (director, "director"),
            (director, "writer"),
            (other_actor, "actor"),
            (actor, "actor"),
        ],
        description="An insurance salesman is seduced.",
        release_year=1944,
        type="movie",
    )

    response = await client.get(f"/recom/v1/movies/{movie.movie_id}")

    assert response.status_code == 200
    wilder = {"person_id": str(director.person_id), "full_name": "Billy Wilder"}
    assert response.json() == {
        "movie_id": str(movie.movie_id),
        "title": f"{word} Double Indemnity",
        "description": "An insurance salesman is seduced.",
        "release_year": 1944,
        "rating": None,
        "type": "movie",
        "genres": [{"genre_id": str(noir.genre_id), "name": f"Noir {word}"}],
        "actors": [
            {"person_id": str(actor.person_id), "full_name": "Barbara Stanwyck"},
            {"person_id": str(other_actor.person_id), "full_name": "Fred MacMurray"},
        ],
        "directors": [wilder],
        "writers": [wilder],
    }


async def test_unknown_movie_is_404(client: AsyncClient) -> None:
    response = await client.get(f"/recom/v1/movies/{uuid.uuid4()}")

    assert response.status_code == 404
    assert response.json() == {"detail": "MOVIE_NOT_FOUND"}


async def test_malformed_movie_id_is_422(client: AsyncClient) -> None:
    response = await client.get("/recom/v1/movies/not-a-uuid")

    assert response.status_code == 422
    assert response.json()["detail"] == "VALIDATION_ERROR"
    assert response.json()["errors"][0]["loc"] == ["path", "movie_id"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page": 0}, "page"),
        ({"size": 101}, "size"),
        ({"size": 0}, "size"),
        ({"search": "x" * 201}, "search"),
        ({"page": "x"}, "page"),
    ],
)
async def test_bad_listing_parameters_are_422(
    client: AsyncClient, params: dict[str, str | int], field: str
) -> None:
    response = await client.get("/recom/v1/movies", params=params)

    assert response.status_code == 422
    assert response.json()["detail"] == "VALIDATION_ERROR"
    assert [e["loc"] for e in response.json()["errors"]] == [["query", field]]


@pytest.mark.parametrize("field", ["search", "genre"])
async def test_nul_character_in_search_or_genre_is_422(client: AsyncClient, field: str) -> None:
    """PostgreSQL cannot compare text holding U+0000: refused before it gets there."""
    response = await client.get("/recom/v1/movies", params={field: "Drama\x00"})

    assert response.status_code == 422
    assert response.json() == {
        "detail": "VALIDATION_ERROR",
        "errors": [
            {
                "loc": ["query", field],
                "msg": "Text must not contain the NUL character (U+0000)",
                "type": "string_nul_character",
            }
        ],
    }


async def test_ready_reports_a_disabled_etl_without_failing(client: AsyncClient) -> None:
    response = await client.get("/recom/ready")

    assert response.json()["checks"]["etl"] == "disabled"
