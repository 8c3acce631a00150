"""Alembic environment of fastapi_auth: the URL comes from the service settings."""

from contracts.db import run_migrations
from fastapi_auth.config import get_settings
from fastapi_auth.models import Base

run_migrations(get_settings().database_url, Base.metadata)
