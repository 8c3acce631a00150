"""ORM models of notifications_service."""

from notifications_service.db import Base

__all__ = ["Base"]
