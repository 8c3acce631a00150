"""HTTP shapes of the recommender's endpoints."""

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class RecommendationRead(BaseModel):
    movie_id: uuid.UUID
    title: str | None = Field(description="Null until the catalogue holds the film")
    score: float = Field(
        description="Sum of the similarities of the neighbours who rated it, "
        "or the Bayesian average score for popular picks"
    )
    reason: str
    source: Literal["neighbours", "popular"]
    neighbours: int = Field(description="Similar viewers who rated it")
    neighbour_mean_score: float | None = Field(description="Their mean score, 1..10")
    ratings: int = Field(description="Everyone who rated it")
    mean_score: float | None = Field(description="Everyone's mean score, 1..10")


class RecommendationsRead(BaseModel):
    user_id: uuid.UUID
    recommendations: list[RecommendationRead]
    strategy: str
    generated_at: datetime


class GeneralRead(BaseModel):
    recommendations: list[RecommendationRead]
    strategy: str
    generated_at: datetime


class RatingRead(BaseModel):
    movie_id: uuid.UUID
    title: str | None
    score: int


class RatingsPage(BaseModel):
    user_id: uuid.UUID
    items: list[RatingRead]
    total: int
    page: int
    size: int


class SimilarMovieRead(BaseModel):
    movie_id: uuid.UUID
    title: str | None
    similarity: float = Field(description="Cosine of the two films' rating columns")
    common_viewers: int


class SimilarMoviesRead(BaseModel):
    movie_id: uuid.UUID
    title: str | None
    similar: list[SimilarMovieRead]
