"""The film catalogue over HTTP: search, genre filter and paging, and one film with its people."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from contracts.resources import SessionDep
from contracts.text import StorableText
from fastapi_recom.errors import MovieNotFound
from fastapi_recom.models import Genre, Movie, MovieGenre, MoviePerson, Person

ROLES = ("actor", "director", "writer")


class GenreRead(BaseModel):
    genre_id: uuid.UUID
    name: str


class PersonRead(BaseModel):
    person_id: uuid.UUID
    full_name: str


class MovieSummary(BaseModel):
    movie_id: uuid.UUID
    title: str
    release_year: int | None
    rating: float | None
    type: str | None
    genres: list[str]


class MoviePage(BaseModel):
    items: list[MovieSummary]
    page: int
    size: int
    total: int


class MovieRead(BaseModel):
    movie_id: uuid.UUID
    title: str
    description: str | None
    release_year: int | None
    rating: float | None
    type: str | None
    genres: list[GenreRead]
    actors: list[PersonRead]
    directors: list[PersonRead]
    writers: list[PersonRead]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(search: str | None, genre: str | None) -> Select[tuple[Movie]]:
    stmt = select(Movie)
    if search:
        stmt = stmt.where(Movie.title.ilike(f"%{_escape_like(search)}%", escape="\\"))
    if genre:
        with_genre = (
            select(MovieGenre.movie_id)
            .join(Genre, Genre.genre_id == MovieGenre.genre_id)
            .where(func.lower(Genre.name) == genre.lower())
        )
        stmt = stmt.where(Movie.movie_id.in_(with_genre))
    return stmt


async def list_movies(
    session: AsyncSession, *, search: str | None, genre: str | None, page: int, size: int
) -> MoviePage:
    stmt = _filtered(search, genre)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    movies = await session.scalars(
        stmt.options(selectinload(Movie.genres))
        .order_by(Movie.title, Movie.movie_id)
        .offset((page - 1) * size)
        .limit(size)
    )
    items = [
        MovieSummary(
            movie_id=m.movie_id,
            title=m.title,
            release_year=m.release_year,
            rating=m.rating,
            type=m.type,
            genres=[g.name for g in m.genres],
        )
        for m in movies
    ]
    return MoviePage(items=items, page=page, size=size, total=total or 0)


async def get_movie(session: AsyncSession, movie_id: uuid.UUID) -> MovieRead:
    movie = await session.scalar(
        select(Movie).options(selectinload(Movie.genres)).where(Movie.movie_id == movie_id)
    )
    if movie is None:
        raise MovieNotFound
    people: dict[str, list[PersonRead]] = {role: [] for role in ROLES}
    rows = await session.execute(
        select(MoviePerson.role, Person.person_id, Person.full_name)
        .join(Person, Person.person_id == MoviePerson.person_id)
        .where(MoviePerson.movie_id == movie_id)
        .order_by(Person.full_name, Person.person_id)
    )
    for role, person_id, full_name in rows:
        people.setdefault(role, []).append(PersonRead(person_id=person_id, full_name=full_name))
    return MovieRead(
        movie_id=movie.movie_id,
        title=movie.title,
        description=movie.description,
        release_year=movie.release_year,
        rating=movie.rating,
        type=movie.type,
        genres=[GenreRead(genre_id=g.genre_id, name=g.name) for g in movie.genres],
        actors=people["actor"],
        directors=people["director"],
        writers=people["writer"],
    )


router = APIRouter(prefix="/recom/v1/movies", tags=["catalogue"])


@router.get("", summary="The catalogue: title search, genre filter, paging")
async def read_movies(
    session: SessionDep,
    search: Annotated[
        StorableText | None,
        Query(max_length=200, description="Part of the title; empty: any title"),
    ] = None,
    genre: Annotated[
        StorableText | None,
        Query(max_length=100, description="Genre name (any case); empty: any genre"),
    ] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> MoviePage:
    # A front end's empty search box sends `search=`: the whole catalogue, not a 422.
    return await list_movies(
        session,
        search=(search or "").strip() or None,
        genre=(genre or "").strip() or None,
        page=page,
        size=size,
    )


@router.get(
    "/{movie_id}",
    summary="One film with its genres and its people by role",
    responses={404: {"description": "MOVIE_NOT_FOUND"}},
)
async def read_movie(session: SessionDep, movie_id: uuid.UUID) -> MovieRead:
    return await get_movie(session, movie_id)
