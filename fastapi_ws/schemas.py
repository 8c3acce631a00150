"""HTTP shapes of fastapi_ws."""

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class RoomRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: uuid.UUID
    email: str | None
    full_name: str | None
    last_seq: int
    created_at: datetime
    updated_at: datetime


class MessageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    kind: str
    author: str
    created_at: datetime
    body: str
    items: list[dict[str, Any]]
