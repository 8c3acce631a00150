"""fastapi-users wired to this service: the user manager, its database adapter and dependencies."""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from fastapi_users import FastAPIUsers, exceptions
from fastapi_users.authentication import AuthenticationBackend, BearerTransport
from fastapi_users.jwt import decode_jwt, generate_jwt
from fastapi_users.manager import BaseUserManager, UUIDIDMixin
from fastapi_users.schemas import BaseUserCreate
from fastapi_users_db_sqlalchemy import SQLAlchemyUserDatabase
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import Event, PasswordResetRequested, UserRegistered, UserVerified, utcnow
from contracts.resources import SessionDep
from contracts.tokens import TokenClaims, TokenVerifier, record_confirmation
from fastapi_auth.config import Settings
from fastapi_auth.models import User
from fastapi_auth.outbox import OutboxRelay, stage
from fastapi_auth.schemas import UserCreate
from fastapi_auth.security import (
    MAX_PASSWORD_LENGTH,
    PASSWORD_HASHER,
    AccessTokenStrategy,
    PasswordHasher,
    SigningKeys,
    address_fingerprint,
    normalize_password,
    password_problem,
)
from fastapi_auth.service import (
    issue_confirm_code,
    mail_allowed,
    read_confirm_code,
    revoke_all_tokens,
    revoke_token,
    spend_confirm_code,
)
from fastapi_auth.throttle import LoginThrottle

logger = logging.getLogger(__name__)

PREFIX = "/auth/v1"
LOGIN_PATH = f"{PREFIX}/jwt/login"
CONFIRM_PATH = f"{PREFIX}/s/"
RESET_PAGE_PATH = f"{PREFIX}/reset"

UNIQUE_VIOLATION = "23505"
# Claim of a password-reset token: the fingerprint of the address the link was sent to.
RESET_ADDRESS_CLAIM = "email_fgpt"


@dataclass(frozen=True)
class AuthContext:
    """What the manager and the token strategy need, opened once in the lifespan."""

    settings: Settings
    redis: Redis
    sessionmaker: async_sessionmaker[AsyncSession]
    keys: SigningKeys
    verifier: TokenVerifier
    throttle: LoginThrottle
    relay: OutboxRelay

    def confirm_url(self, code: str) -> str:
        return f"{self.settings.public_base_url.rstrip('/')}{CONFIRM_PATH}{code}"

    def reset_url(self, token: str) -> str:
        # In the fragment: the browser never sends it to a server, a log or a Referer.
        return f"{self.settings.public_base_url.rstrip('/')}{RESET_PAGE_PATH}#token={token}"


class UserDatabase(SQLAlchemyUserDatabase[User, uuid.UUID]):
    """The adapter, turning the unique-index race of two sign-ups into UserAlreadyExists."""

    async def create(self, create_dict: dict[str, Any]) -> User:
        try:
            return await super().create(create_dict)
        except IntegrityError as exc:
            await self.session.rollback()
            if getattr(exc.orig, "sqlstate", None) == UNIQUE_VIOLATION:
                raise exceptions.UserAlreadyExists from exc
            raise

    async def update(self, user: User, update_dict: dict[str, Any]) -> User:
        try:
            return await super().update(user, update_dict)
        except IntegrityError as exc:
            await self.session.rollback()
            if getattr(exc.orig, "sqlstate", None) == UNIQUE_VIOLATION:
                raise exceptions.UserAlreadyExists from exc
            raise

    async def get_for_update(self, user_id: uuid.UUID) -> User | None:
        """The user row, locked until the transaction ends, with fresh values."""
        return await self.session.scalar(
            select(User)
            .where(User.id == user_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    """fastapi-users' manager with this service's policy, events, codes and revocations.

    Every event is staged on the session before the adapter commits the user change, so the
    change and its event are one transaction; the relay publishes it afterwards.
    """

    user_db: UserDatabase
    password_helper: PasswordHasher

    def __init__(
        self, user_db: UserDatabase, context: AuthContext, client_address: str | None = None
    ) -> None:
        super().__init__(user_db, PASSWORD_HASHER)
        self.context = context
        self.client_address = client_address
        self.credentials_read_at: datetime | None = None
        settings = context.settings
        self.reset_password_token_secret = settings.secret_key
        self.reset_password_token_lifetime_seconds = settings.reset_token_lifetime_seconds
        self.verification_token_secret = settings.secret_key

    @property
    def session(self) -> AsyncSession:
        return self.user_db.session

    async def _commit_events(self, *events: Event) -> None:
        stage(self.session, *events)
        await self.session.commit()
        self.context.relay.wake()

    async def validate_password(self, password: str, user: BaseUserCreate | User) -> None:
        reason = password_problem(password, email=user.email)
        if reason is not None:
            raise exceptions.InvalidPasswordException(reason=reason.value)

    async def create(
        self, user_create: BaseUserCreate, safe: bool = False, request: Request | None = None
    ) -> User:
        await self.validate_password(user_create.password, user_create)
        if await self.user_db.get_by_email(user_create.email) is not None:
            raise exceptions.UserAlreadyExists
        user_dict = (
            user_create.create_update_dict() if safe else user_create.create_update_dict_superuser()
        )
        user_dict["hashed_password"] = await self.password_helper.hash_async(
            user_dict.pop("password")
        )
        user_dict["id"] = user_id = uuid.uuid4()
        email, full_name = user_create.email, user_dict.get("full_name", "")
        if user_dict.get("is_verified"):
            stage(self.session, UserVerified(user_id=user_id, email=email, full_name=full_name))
        else:
            stage(self.session, await self._registered_event(user_id, email, full_name))
        # The adapter commits the user and the staged event together (or neither).
        user = await self.user_db.create(user_dict)
        self.context.relay.wake()
        await self.on_after_register(user, request)
        return user

    async def _registered_event(
        self, user_id: uuid.UUID, email: str, full_name: str, previous_email: str | None = None
    ) -> UserRegistered:
        # The code goes to Redis first: if the user then fails to commit, it leads nowhere.
        code = await issue_confirm_code(
            self.context.redis, user_id, email, ttl=self.context.settings.confirm_code_ttl_seconds
        )
        return UserRegistered(
            user_id=user_id,
            email=email,
            full_name=full_name,
            confirm_url=self.context.confirm_url(code),
            previous_email=previous_email,
        )

    async def authenticate(self, credentials: OAuth2PasswordRequestForm) -> User | None:
        throttle = self.context.throttle
        await throttle.check(credentials.username, self.client_address)
        # Taken before the row is read and used as the token's `iat`: a login that read the
        # row as it was before a password change or deactivation gets a token issued before
        # the change's revocation cut-off, recorded once more after its commit (`_update`).
        self.credentials_read_at = utcnow()
        user = await self._check_credentials(credentials.username, credentials.password)
        if user is None:
            await throttle.record_failure(credentials.username, self.client_address)
        else:
            await throttle.record_success(credentials.username, self.client_address)
        return user

    async def _check_credentials(self, email: str, password: str) -> User | None:
        if len(normalize_password(password)) > MAX_PASSWORD_LENGTH:
            return None
        # No address holds a NUL (and PostgreSQL would refuse to compare one): no such user.
        user = None if "\x00" in email else await self.user_db.get_by_email(email)
        if user is None:
            # Hash anyway, so an unknown e-mail costs the same time as a wrong password.
            await self.password_helper.hash_async(password)
            return None
        verified, new_hash = await self.password_helper.verify_and_update_async(
            password, user.hashed_password
        )
        if not verified:
            return None
        if new_hash is not None:
            await self.user_db.update(user, {"hashed_password": new_hash})
        return user

    def token_issued_at(self) -> datetime:
        """The `iat` of the token a login issues (see `authenticate`)."""
        return self.credentials_read_at or utcnow()

    async def _update(self, user: User, update_dict: dict[str, Any]) -> User:
        update = dict(update_dict)
        password = update.pop("password", None)
        if password is not None:
            await self.validate_password(password, user)
            update["hashed_password"] = await self.password_helper.hash_async(password)
        try:
            # Decide on the row as it is now, locked until the commit: the copy loaded earlier
            # may predate a concurrent confirmation, and SQLAlchemy leaves out a column whose
            # new value equals the stale one (a new address would stay verified).
            locked = await self.user_db.get_for_update(user.id)
            if locked is None:
                raise exceptions.UserNotExists
            was_verified = locked.is_verified
            revokes_all = (
                password is not None
                or (update.get("is_active") is False and locked.is_active)
                # A demoted superuser's tokens say is_superuser: true until they expire.
                or (update.get("is_superuser") is False and locked.is_superuser)
            )
            events = await self._update_events(locked, update, revokes_all=revokes_all)
            stage(self.session, *events)
            updated = await self.user_db.update(locked, update)
        except Exception:
            await self.session.rollback()
            raise
        if revokes_all:
            await self._revoke_all_again(updated.id)
        if events:
            self.context.relay.wake()
        if updated.is_verified != was_verified:  # confirmed, or unconfirmed by a new address
            await self._note_confirmation(updated.id, updated.is_verified)
        return updated

    async def _update_events(
        self, user: User, update: dict[str, Any], *, revokes_all: bool
    ) -> list[Event]:
        """The events of an update of the locked `user`; a new address in `update` also
        makes it unconfirmed, as in fastapi-users (unless a superuser says otherwise)."""
        events: list[Event] = []
        if revokes_all:
            events.append(await self._revoke_all(user.id))
        if update.get("is_verified") and not user.is_verified:
            events.append(
                UserVerified(
                    user_id=user.id,
                    email=update.get("email", user.email),
                    full_name=update.get("full_name", user.full_name),
                )
            )
        new_email = update.get("email")
        if (
            new_email is not None
            and new_email != user.email
            and await self._is_new_address(user, new_email)
        ):
            update.setdefault("is_verified", False)
            events.extend(await self._new_address_events(user, new_email, update))
        return events

    async def _is_new_address(self, user: User, email: str) -> bool:
        """False for the user's own address in other letter case: a cosmetic change that keeps
        the confirmation. Raises UserAlreadyExists for another user's address.

        Checked before the link is sent: a refused change must not spend the link cooldown
        that the corrected one needs. "The same address" is what the lookup (and the unique
        index) take as one: equal in lower case.
        """
        try:
            holder = await self.get_by_email(email)
        except exceptions.UserNotExists:
            return True
        if holder.id != user.id:
            raise exceptions.UserAlreadyExists
        return False

    async def _new_address_events(
        self, user: User, email: str, update: dict[str, Any]
    ) -> list[Event]:
        """Send a new address a short link of its own, in the change's transaction (the old
        address's links confirm nothing any more). A confirmed old address is named in the
        event, to be told of the change.

        A change away from a confirmed address is sent whatever the cooldown, or its notice
        would be lost; it cannot be repeated without a confirmation in between, as the new
        address is unconfirmed.
        """
        if update.get("is_verified"):
            return []
        allowed = await self._mail_allowed("confirm", user.id)  # spends the cooldown either way
        if not allowed and not user.is_verified:
            return []
        return [
            await self._registered_event(
                user.id,
                email,
                update.get("full_name", user.full_name),
                previous_email=user.email if user.is_verified else None,
            )
        ]

    async def _note_confirmation(self, user_id: uuid.UUID, confirmed: bool) -> None:
        """Tokens issued before a confirmation say unverified until they expire; Redis tells
        the services otherwise. The database already holds the change, so Redis being down
        costs the viewer a new sign-in at most, not the confirmation."""
        try:
            await record_confirmation(
                self.context.redis,
                user_id,
                confirmed=confirmed,
                keep_seconds=self.context.settings.access_token_lifetime_seconds,
            )
        except (RedisError, OSError) as exc:
            logger.warning("confirmation of %s not recorded in Redis: %r", user_id, exc)

    async def _revoke_all(self, user_id: uuid.UUID) -> Event:
        # Redis first: if the change then fails, the user merely logs in again.
        return await revoke_all_tokens(
            self.context.redis,
            user_id,
            token_lifetime=self.context.settings.access_token_lifetime_seconds,
        )

    async def _revoke_all_again(self, user_id: uuid.UUID) -> None:
        """The cut-off once more, after the change's commit: a login that read the row before
        the commit issued its token (`iat` from before the read) before this cut-off. The
        event staged with the first one stands; fastapi_ws re-checks open sockets against
        Redis. The change is committed, so Redis failing now is logged, not answered 500."""
        try:
            await self._revoke_all(user_id)
        except (RedisError, OSError) as exc:
            logger.warning("second revocation cut-off of %s not recorded: %r", user_id, exc)

    async def revoke(self, claims: TokenClaims) -> None:
        """Logout: this token is refused everywhere from now on."""
        await self._commit_events(await revoke_token(self.context.redis, claims))

    async def request_verify(self, user: User, request: Request | None = None) -> None:
        """Send a new short link (a new `auth.user.registered` event carries it)."""
        if not user.is_active:
            raise exceptions.UserInactive
        if user.is_verified:
            raise exceptions.UserAlreadyVerified
        if not await self._mail_allowed("confirm", user.id):
            return
        event = await self._registered_event(user.id, user.email, user.full_name)
        await self._commit_events(event)
        await self.on_after_request_verify(user, event.confirm_url, request)

    async def verify(self, token: str, request: Request | None = None) -> User:
        """Verify by a short-link code; raises ConfirmCodeUnknown, ConfirmCodeSpent or
        UserAlreadyVerified. The row lock makes two clicks verify (and announce) once."""
        code = await read_confirm_code(self.context.redis, token)
        user = await self.user_db.get_for_update(code.user_id)
        # A code sent to an address the user has since changed confirms nothing.
        if user is None or user.email.casefold() != code.email.casefold():
            await self.session.rollback()
            raise exceptions.InvalidVerifyToken
        if user.is_verified:
            await self.session.rollback()
            await spend_confirm_code(self.context.redis, token)
            raise exceptions.UserAlreadyVerified
        verified = await self._update(user, {"is_verified": True})
        await spend_confirm_code(self.context.redis, token)
        await self.on_after_verify(verified, request)
        return verified

    async def forgot_password(self, user: User, request: Request | None = None) -> None:
        """fastapi-users' reset token, bound also to the address it is sent to: the link must
        not outlive a move away from that mailbox (often made because it was compromised)."""
        if not user.is_active:
            raise exceptions.UserInactive
        if not await self._mail_allowed("reset", user.id):
            return
        secret = self.reset_password_token_secret
        token_data = {
            "sub": str(user.id),
            "password_fgpt": await self.password_helper.hash_async(user.hashed_password),
            RESET_ADDRESS_CLAIM: address_fingerprint(user.email, secret),
            "aud": self.reset_password_token_audience,
        }
        token = generate_jwt(token_data, secret, self.reset_password_token_lifetime_seconds)
        await self.on_after_forgot_password(user, token, request)

    async def reset_password(
        self, token: str, password: str, request: Request | None = None
    ) -> User:
        """fastapi-users' reset, with a token refused as any bad one (400
        RESET_PASSWORD_BAD_TOKEN) once the account's address is not the one it was sent to.
        A change of the address's letter case voids it too: cheap, and errs on the safe side."""
        secret = self.reset_password_token_secret
        try:
            data = decode_jwt(token, secret, [self.reset_password_token_audience])
            user_id = self.parse_id(data["sub"])
            sent_to = str(data[RESET_ADDRESS_CLAIM])
        except (jwt.PyJWTError, KeyError, exceptions.InvalidID) as exc:
            raise exceptions.InvalidResetPasswordToken from exc
        # Locked until the new password is committed: no address change can come in between.
        user = await self.user_db.get_for_update(user_id)
        if user is None or not hmac.compare_digest(
            sent_to, address_fingerprint(user.email, secret)
        ):
            await self.session.rollback()
            raise exceptions.InvalidResetPasswordToken
        try:
            return await super().reset_password(token, password, request)
        except Exception:
            await self.session.rollback()
            raise

    async def _mail_allowed(self, kind: str, user_id: uuid.UUID) -> bool:
        # The answer is 202 either way: a skipped e-mail reveals nothing.
        return await mail_allowed(
            self.context.redis, kind, user_id, cooldown=self.context.settings.mail_cooldown_seconds
        )

    async def on_after_forgot_password(
        self, user: User, token: str, request: Request | None = None
    ) -> None:
        await self._commit_events(
            PasswordResetRequested(
                user_id=user.id, email=user.email, reset_url=self.context.reset_url(token)
            )
        )

    async def on_before_delete(self, user: User, request: Request | None = None) -> None:
        # Staged: committed by the adapter's delete.
        stage(self.session, await self._revoke_all(user.id))

    async def on_after_delete(self, user: User, request: Request | None = None) -> None:
        await self._revoke_all_again(user.id)
        self.context.relay.wake()


def get_context(request: Request) -> AuthContext:
    context: AuthContext = request.app.state.auth
    return context


ContextDep = Annotated[AuthContext, Depends(get_context)]


async def get_user_db(session: SessionDep) -> AsyncIterator[UserDatabase]:
    yield UserDatabase(session, User)


def get_user_manager(
    request: Request,
    context: ContextDep,
    user_db: Annotated[UserDatabase, Depends(get_user_db)],
) -> UserManager:
    # Behind the gateway uvicorn takes the client address from X-Forwarded-For.
    address = request.client.host if request.client else None
    return UserManager(user_db, context, address)


UserManagerDep = Annotated[UserManager, Depends(get_user_manager)]


def get_strategy(context: ContextDep, manager: UserManagerDep) -> AccessTokenStrategy:
    return AccessTokenStrategy(
        context.keys, context.verifier, context.settings, manager.revoke, manager.token_issued_at
    )


class NoStoreBearerTransport(BearerTransport):
    """RFC 6749 5.1: a response carrying a token must not be cached."""

    async def get_login_response(self, token: str) -> Response:
        response = await super().get_login_response(token)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response


auth_backend = AuthenticationBackend[User, uuid.UUID](
    name="jwt", transport=NoStoreBearerTransport(tokenUrl=LOGIN_PATH), get_strategy=get_strategy
)
fastapi_users = FastAPIUsers[User, uuid.UUID](get_user_manager, [auth_backend])


async def with_manager(
    context: AuthContext, action: Callable[[UserManager], Awaitable[None]]
) -> None:
    """Run `action` with a manager on a session of its own (after the response is sent)."""
    async with context.sessionmaker() as session:
        await action(UserManager(UserDatabase(session, User), context))


async def send_password_reset(context: AuthContext, email: str) -> None:
    async def action(manager: UserManager) -> None:
        try:
            await manager.forgot_password(await manager.get_by_email(email))
        except (exceptions.UserNotExists, exceptions.UserInactive):
            return

    await _in_background(with_manager(context, action), "password reset")


async def send_confirmation(context: AuthContext, email: str) -> None:
    async def action(manager: UserManager) -> None:
        try:
            await manager.request_verify(await manager.get_by_email(email))
        except (
            exceptions.UserNotExists,
            exceptions.UserInactive,
            exceptions.UserAlreadyVerified,
        ):
            return

    await _in_background(with_manager(context, action), "confirmation link")


async def _in_background(work: Awaitable[None], what: str) -> None:
    # Nobody waits for a background task: log its failure, do not lose it silently.
    try:
        await work
    except Exception:
        logger.exception("sending the %s failed", what)


async def ensure_first_superuser(context: AuthContext) -> None:
    """Create FIRST_SUPERUSER_EMAIL, verified, unless a user has that e-mail already."""
    settings = context.settings
    email = settings.first_superuser_email.strip()
    password = settings.first_superuser_password.get_secret_value()
    if not email or not password:
        return
    try:
        superuser = UserCreate(
            email=email,
            password=password,
            full_name="Administrator",
            is_superuser=True,
            is_verified=True,
        )
    except ValidationError as exc:
        logger.error("FIRST_SUPERUSER_EMAIL is not a valid address: %s", exc)
        return

    async def action(manager: UserManager) -> None:
        if await manager.user_db.get_by_email(email) is not None:
            return
        try:
            await manager.create(superuser, safe=False)
        except exceptions.UserAlreadyExists:
            return  # another replica created it first
        except exceptions.InvalidPasswordException as exc:
            logger.error("FIRST_SUPERUSER_PASSWORD refused by the password policy: %s", exc.reason)
            return
        logger.info("created the first superuser %s", email)

    await with_manager(context, action)
