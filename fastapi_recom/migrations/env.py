"""Alembic environment of fastapi_recom: the URL comes from the service settings."""

from contracts.db import run_migrations
from fastapi_recom.config import get_settings
from fastapi_recom.models import Base

run_migrations(get_settings().database_url, Base.metadata)
