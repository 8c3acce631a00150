"""Alembic environment of notifications_service: the URL comes from the service settings."""

from contracts.db import run_migrations
from notifications_service.config import get_settings
from notifications_service.models import Base

run_migrations(get_settings().database_url, Base.metadata)
