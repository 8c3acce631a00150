"""ORM models of fastapi_ws."""

from fastapi_ws.db import Base

__all__ = ["Base"]
