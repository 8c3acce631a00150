"""Request and response bodies of the ratings API."""

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

# Strict: "7", 7.0 or true are refused rather than read as a score.
Score = Annotated[StrictInt, Field(ge=1, le=10, description="1 (worst) to 10 (best)")]


class RatingCreate(BaseModel):
    # The viewer comes from the token, so a body naming a user_id is refused, not ignored.
    model_config = ConfigDict(extra="forbid")

    movie_id: uuid.UUID
    score: Score


class RatingAccepted(BaseModel):
    event_id: uuid.UUID = Field(description="The event's id; the Idempotency-Key when given")
    movie_id: uuid.UUID
    score: int
    occurred_at: datetime


class RatingDeletionAccepted(BaseModel):
    event_id: uuid.UUID
    movie_id: uuid.UUID
    occurred_at: datetime
