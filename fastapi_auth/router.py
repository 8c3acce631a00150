"""Routes of fastapi_auth under /auth/v1: fastapi-users' routers, the short link, pages, JWKS."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi_users import exceptions
from pydantic import EmailStr

from fastapi_auth.schemas import UserCreate, UserRead, UserUpdate
from fastapi_auth.service import ConfirmCodeSpent
from fastapi_auth.throttle import LOGIN_THROTTLED
from fastapi_auth.users import (
    PREFIX,
    ContextDep,
    UserManagerDep,
    auth_backend,
    fastapi_users,
    send_confirmation,
    send_password_reset,
)

TEMPLATES = Path(__file__).with_name("templates")
CHAT_PAGE = "/ws/v1/chat/"
# The code is in the URL: keep it out of caches and of the next site's Referer.
PRIVATE_PAGE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

EmailBody = Annotated[EmailStr, Body(embed=True)]


def without(router: APIRouter, *names: str) -> APIRouter:
    """fastapi-users' router minus the routes this service replaces."""
    router.routes = [r for r in router.routes if getattr(r, "name", None) not in names]
    return router


# The gateway rate-limits these routes per client address (nginx `limit_req`) and this service
# throttles failed logins; both answer 429 with Retry-After.
THROTTLED_ROUTES = {
    f"auth:{auth_backend.name}.login": "Too many failed logins for this account or address, "
    f"or too many attempts through the gateway (`{LOGIN_THROTTLED}` or `TOO_MANY_REQUESTS`)",
    "register:register": "Too many sign-ups from this address through the gateway "
    "(`TOO_MANY_REQUESTS`)",
}


def _add_throttle_response(router: APIRouter) -> APIRouter:
    for route in router.routes:
        if isinstance(route, APIRoute) and route.name in THROTTLED_ROUTES:
            route.responses[status.HTTP_429_TOO_MANY_REQUESTS] = {
                "description": THROTTLED_ROUTES[route.name] + "; retry after `Retry-After` s",
            }
    return router


@lru_cache
def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def notice_page(status_code: int, title: str, message: str) -> HTMLResponse:
    html = _template("notice.html").substitute(title=title, message=message)
    return HTMLResponse(html, status_code=status_code, headers=PRIVATE_PAGE)


router = APIRouter(prefix=PREFIX)
router.include_router(
    _add_throttle_response(fastapi_users.get_register_router(UserRead, UserCreate)),
    tags=["registration"],
)
router.include_router(
    _add_throttle_response(fastapi_users.get_auth_router(auth_backend)),
    prefix="/jwt",
    tags=["login"],
)
# forgot-password and request-verify-token are replaced below: they answer before working.
router.include_router(
    without(fastapi_users.get_verify_router(UserRead), "verify:request-token"),
    tags=["registration"],
)
router.include_router(
    without(fastapi_users.get_reset_password_router(), "reset:forgot_password"),
    tags=["password"],
)
router.include_router(
    fastapi_users.get_users_router(UserRead, UserUpdate), prefix="/users", tags=["users"]
)


@router.post(
    "/forgot-password",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["password"],
    summary="E-mail a password-reset link if the address has an active account",
    description="Answers 202 at once whatever the address, and does the work afterwards, so "
    "neither the answer nor its timing tells whether an account exists. The e-mail "
    "(event `auth.password.reset_requested`) links to `/auth/v1/reset#token=...`.",
)
async def forgot_password(
    email: EmailBody, context: ContextDep, background: BackgroundTasks
) -> None:
    background.add_task(send_password_reset, context, email)


@router.post(
    "/request-verify-token",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["registration"],
    summary="E-mail a new confirmation link if the address has an unverified account",
    description="Answers 202 at once whatever the address (no user enumeration). The new "
    "short link comes in a new `auth.user.registered` event; its code is also accepted by "
    "`POST /auth/v1/verify` as `token`.",
)
async def request_verify_token(
    email: EmailBody, context: ContextDep, background: BackgroundTasks
) -> None:
    background.add_task(send_confirmation, context, email)


@router.get(
    "/s/{code}",
    tags=["registration"],
    summary="Confirmation short link: verify the e-mail, then go to the chat page",
    response_class=RedirectResponse,
    status_code=status.HTTP_303_SEE_OTHER,
    responses={
        303: {"description": "Verified: redirect to the chat page `/ws/v1/chat/`"},
        404: {"description": "Unknown or expired link (HTML page)", "content": {"text/html": {}}},
        410: {"description": "Link already used (HTML page)", "content": {"text/html": {}}},
    },
)
async def open_confirmation_link(code: str, user_manager: UserManagerDep) -> Response:
    try:
        await user_manager.verify(code)
    except (ConfirmCodeSpent, exceptions.UserAlreadyVerified):
        return notice_page(
            status.HTTP_410_GONE,
            "This link has already been used",
            "Your e-mail address is already confirmed. Sign in to get to your chat room.",
        )
    except exceptions.InvalidVerifyToken:
        return notice_page(
            status.HTTP_404_NOT_FOUND,
            "This link is not valid",
            "The confirmation link is unknown or has expired (links last 24 hours). "
            "Ask for a new one from the sign-in page.",
        )
    return RedirectResponse(CHAT_PAGE, status_code=status.HTTP_303_SEE_OTHER, headers=PRIVATE_PAGE)


@router.get(
    "/reset",
    tags=["password"],
    summary="Page that sets a new password with the token of a reset e-mail",
    response_class=HTMLResponse,
)
async def reset_page() -> HTMLResponse:
    return HTMLResponse(_template("reset.html").template, headers=PRIVATE_PAGE)


@router.get(
    "/.well-known/jwks.json",
    tags=["tokens"],
    summary="The public key that verifies access tokens (RS256), as a JWK set",
)
async def jwks(context: ContextDep) -> JSONResponse:
    return JSONResponse(context.keys.jwks, headers={"Cache-Control": "public, max-age=300"})
