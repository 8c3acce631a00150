"""ORM models of fastapi_auth."""

from fastapi_auth.db import Base

__all__ = ["Base"]
