"""forgot-password and request-verify-token answer alike whether or not the e-mail has an account."""

from httpx import AsyncClient, Response
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fastapi_auth.models import User
from tests.auth.helpers import EventTap, new_email, outbox_count, register
from tests.support import wait_for

# Headers that may differ between any two answers.
VOLATILE = {"date"}


def shape(response: Response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE}
    return response.status_code, response.content, headers


async def test_forgot_password_answers_alike_for_known_and_unknown(
    client: AsyncClient, events: EventTap, sessions: async_sessionmaker[AsyncSession]
) -> None:
    known = await register(client)
    inactive = await register(client)
    async with sessions() as session:
        await session.execute(
            update(User).where(User.email == inactive["email"]).values(is_active=False)
        )
        await session.commit()

    unknown = new_email()
    answers = [
        await client.post("/auth/v1/forgot-password", json={"email": email})
        for email in (known["email"], unknown, inactive["email"])
    ]

    first = shape(answers[0])
    assert all(shape(a) == first for a in answers)
    assert first[0] == 202
    assert answers[0].json() is None
    await events.wait_for("auth.password.reset_requested", user_id=known["id"])
    # The work is done after the answer; in process, before the client gets it.
    reset = "auth.password.reset_requested"
    assert await outbox_count(sessions, reset, user_id=inactive["id"]) == 0
    assert await outbox_count(sessions, reset, email=unknown) == 0


async def test_request_verify_token_answers_alike_for_any_account_state(
    client: AsyncClient, events: EventTap, sessions: async_sessionmaker[AsyncSession]
) -> None:
    unverified = await register(client)
    verified = await register(client)
    code = await events.confirm_code(verified["id"])
    assert (await client.get(f"/auth/v1/s/{code}")).status_code == 303

    answers = [
        await client.post("/auth/v1/request-verify-token", json={"email": email})
        for email in (unverified["email"], verified["email"], new_email())
    ]

    first = shape(answers[0])
    assert first[0] == 202
    assert all(shape(a) == first for a in answers)

    async def resent() -> bool:
        return len(events.matching("auth.user.registered", user_id=unverified["id"])) == 2

    await wait_for(resent)
    assert await outbox_count(sessions, "auth.user.registered", user_id=verified["id"]) == 1


async def test_forgot_password_repeated_sends_one_mail_per_cooldown(
    client: AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await register(client)

    answers = [
        await client.post("/auth/v1/forgot-password", json={"email": user["email"]})
        for _ in range(3)
    ]

    assert [a.status_code for a in answers] == [202, 202, 202]
    reset = "auth.password.reset_requested"
    assert await outbox_count(sessions, reset, user_id=user["id"]) == 1
