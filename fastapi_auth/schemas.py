"""HTTP schemas of fastapi_auth (fastapi-users' base schemas plus full_name and created_at)."""

import uuid
from datetime import datetime
from typing import Annotated

from fastapi_users import schemas
from pydantic import StringConstraints

from contracts.text import NO_CONTROL

FullName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), NO_CONTROL]


class UserRead(schemas.BaseUser[uuid.UUID]):
    full_name: str
    created_at: datetime


class UserCreate(schemas.BaseUserCreate):
    full_name: FullName = ""


class UserUpdate(schemas.BaseUserUpdate):
    full_name: FullName | None = None
