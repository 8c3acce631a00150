"""Plumbing every service shares: the app factory, health and readiness probes, metrics, logging."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.errors import install_error_handlers
from contracts.settings import ServiceSettings

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[Request], Awaitable[object]]


class Degraded(str):
    """A check result shown in /ready that leaves the service ready (a background job behind)."""


# Readiness answers within this time even when a dependency hangs.
CHECK_TIMEOUT = 1.5

# What a page of the cinema's front end (an origin of ALLOWED_ORIGINS) may send and read across
# origins. Tokens travel in the Authorization header, never in cookies, so no credentials mode.
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id")
CORS_EXPOSED = ("Retry-After", "X-Request-Id")
CORS_MAX_AGE = 600

REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route",
    ["service", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REQUESTS_IN_ERROR = Counter(
    "http_requests_5xx_total", "Responses with a 5xx status", ["service", "route"]
)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it must not cost the hot path a task switch."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        # Label look-ups take a lock and build a key; routes and statuses are few.
        self._histograms: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            method = scope["method"]
            # Any token is a method to HTTP: an unknown one must not add a series per request.
            key = (method if method in KNOWN_METHODS else "OTHER", path, status)
            histogram = self._histograms.get(key)
            if histogram is None:
                histogram = REQUEST_LATENCY.labels(self.service, key[0], path, str(status))
                self._histograms[key] = histogram
            histogram.observe(time.perf_counter() - started)
            if status >= 500:
                REQUESTS_IN_ERROR.labels(self.service, path).inc()


def json_response(body: Mapping[str, Any], status_code: int = 200) -> Response:
    """A body of plain values (UUIDs and datetimes included) written by orjson, without the
    model pass of a `response_model`; UTC times end in `Z`, as pydantic writes them."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_UTC_Z),
        status_code=status_code,
        media_type="application/json",
    )


def probes_router(prefix: str, checks: Mapping[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(prefix=f"/{prefix}", tags=["probes"])

    @router.get("/health", summary="Process alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/ready",
        summary="Database, broker and Redis reachable",
        responses={503: {"description": "A dependency is unreachable"}},
    )
    async def ready(request: Request) -> JSONResponse:
        results = await asyncio.gather(*(_run_check(check, request) for check in checks.values()))
        report = dict(zip(checks, results, strict=True))
        ok = all(value == "ok" or isinstance(value, Degraded) for value in report.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": report},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


async def _run_check(check: ReadinessCheck, request: Request) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            result = await check(request)
    except Exception as exc:
        logger.warning("readiness check failed: %r", exc)
        return f"unavailable: {type(exc).__name__}"
    if isinstance(result, Degraded):
        return result
    return "ok" if result is None or result is True else str(result)


def create_app(
    *,
    title: str,
    prefix: str,
    version: str = "1.0.0",
    description: str = "",
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
    checks: Mapping[str, ReadinessCheck] | None = None,
    origins: Sequence[str] | None = None,
) -> FastAPI:
    """A FastAPI app whose docs, OpenAPI, probes and metrics live under its gateway prefix,
    callable from pages of `origins` (default: ALLOWED_ORIGINS) in other origins (CORS)."""
    app = FastAPI(
        title=title,
        telemetry=_telemetry(),
        version=version,
        description=description,
        lifespan=_frozen_after_start(lifespan),
        docs_url=f"/{prefix}/openapi",
        redoc_url=None,
        openapi_url=f"/{prefix}/openapi.json",
        swagger_ui_oauth2_redirect_url=f"/{prefix}/openapi/oauth2-redirect",
    )
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, service=prefix)
    allowed = ServiceSettings().origins if origins is None else list(origins)
    if allowed:
        # Outermost of ours, so a preflight is answered before anything else runs.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=allowed,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            expose_headers=CORS_EXPOSED,
            max_age=CORS_MAX_AGE,
        )
    app.include_router(probes_router(prefix, checks or {}))
    _document_error_shape(app)
    return app


def _telemetry() -> TelemetryConfig:
    """FastAPI's OpenTelemetry hooks only when a deployment asks for them with FastAPI's own
    `FASTAPI_OTEL_AUTO_CONFIGURE=true`: otherwise they cost every request three provider
    look-ups to find out that no provider is configured (our metrics are Prometheus's)."""
    if os.getenv("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return {}
    return {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


# A request allocates a few hundred tracked objects, so CPython's default (a young collection
# every 700 allocations) ran one every request or two; with this, one per ~50 requests, for
# at most a few MB of garbage waiting. One UGC worker, alternated: 567-569 µs of CPU per
# rating against 593-710 µs with the default.
GC_YOUNG_THRESHOLD = 20_000


def _frozen_after_start(
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[Any]]:
    """Run `lifespan`, then move everything alive once the service has started (modules, the
    app, loaded data such as recom's titles) out of the garbage collector's reach: a full
    collection then scans only what requests create, instead of pausing a request for
    milliseconds to walk objects that live as long as the process."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[Any]:
        async with AsyncExitStack() as stack:
            state = None if lifespan is None else await stack.enter_async_context(lifespan(app))
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD)
            yield state

    return run


def _document_error_shape(app: FastAPI) -> None:
    """Make the spec's 422 schema the shape `install_error_handlers` renders."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in components:
                components["HTTPValidationError"] = {
                    "title": "HTTPValidationError",
                    "type": "object",
                    "required": ["detail", "errors"],
                    "properties": {
                        "detail": {"type": "string", "enum": ["VALIDATION_ERROR"]},
                        "errors": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/ValidationError"},
                        },
                    },
                }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
