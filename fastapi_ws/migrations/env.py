"""Alembic environment of fastapi_ws: the URL comes from the service settings."""

from contracts.db import run_migrations
from fastapi_ws.config import get_settings
from fastapi_ws.models import Base

run_migrations(get_settings().database_url, Base.metadata)
