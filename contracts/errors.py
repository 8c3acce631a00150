"""The error shape every service renders: `{"detail": CODE}` with a stable code."""

from __future__ import annotations

import logging
from typing import ClassVar

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

# FastAPI's words for a body it could not decode.
UNPARSABLE_BODY = "There was an error parsing the body"

# A database or Redis that is down or too slow is a 503 with Retry-After, never a 500.
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeout,
    RedisError,
    OSError,
    TimeoutError,
    # A server's refusal to connect reaches us from asyncpg as is (SQLAlchemy wraps only what
    # happens on a connection): starting up or shutting down (57P03, 57P01), out of connection
    # slots (53300), a connection failure (08).
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
# The same refusals on a connection in use, wrapped by SQLAlchemy, by SQLSTATE class.
_UNAVAILABLE_CLASSES = ("08", "53", "57")
# Data the database cannot hold (22: a NUL character, a number out of range) is bad input.
_BAD_DATA_CLASS = "22"


def _sqlstate(exc: DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", None) or "")


def is_dependency_error(exc: BaseException) -> bool:
    """The database or Redis is down, unreachable or refusing, as opposed to a bad request."""
    if isinstance(exc, DEPENDENCY_ERRORS):
        return True
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or _sqlstate(exc)[:2] in _UNAVAILABLE_CLASSES
    )


class ServiceError(Exception):
    """Base of expected failures; subclasses name the fact (`MovieNotFound`)."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "BAD_REQUEST"
    headers: ClassVar[dict[str, str] | None] = None


class DependencyUnavailable(ServiceError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"
    headers = {"Retry-After": "2"}  # noqa: RUF012


def install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return JSONResponse({"detail": exc.code}, status_code=exc.status_code, headers=exc.headers)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Keep FastAPI's field-level list under `errors`, with a stable code in `detail`.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": "VALIDATION_ERROR", "errors": errors}, status_code=422)

    async def on_dependency_down(_: Request, exc: Exception) -> JSONResponse:
        logger.warning("dependency unavailable: %r", exc)
        return JSONResponse(
            {"detail": DependencyUnavailable.code},
            status_code=503,
            headers=DependencyUnavailable.headers,
        )

    async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DBAPIError)
        if is_dependency_error(exc):
            return await on_dependency_down(request, exc)
        if _sqlstate(exc).startswith(_BAD_DATA_CLASS):
            # The edge should have refused it; this keeps a missed field a 422, not a 500.
            logger.warning("value the database cannot hold: %r", exc.orig)
            error = {"loc": [], "msg": "A value cannot be stored", "type": "value_not_storable"}
            return JSONResponse({"detail": "VALIDATION_ERROR", "errors": [error]}, status_code=422)
        raise exc

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and exc.detail == UNPARSABLE_BODY:
            # A body that is not JSON (or not a form) is invalid input like any other: 422.
            error = {
                "loc": ["body"],
                "msg": "The body could not be parsed",
                "type": "body_unparsable",
            }
            return JSONResponse({"detail": "VALIDATION_ERROR", "errors": [error]}, status_code=422)
        return await http_exception_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(DBAPIError, on_database_error)
    for exc_type in DEPENDENCY_ERRORS:
        app.add_exception_handler(exc_type, on_dependency_down)
    app.add_exception_handler(RequestValidationError, on_validation_error)
