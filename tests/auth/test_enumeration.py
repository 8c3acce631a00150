"""forgot-password and request-verify-token answer alike whether or not the e-mail has an account."""

import asyncio

from httpx import AsyncClient, Response
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fastapi_auth.models import OutboxEvent, User
from tests.auth.helpers import EventTap, new_email, register
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
    await asyncio.sleep(0.3)
    assert events.matching("auth.password.reset_requested", user_id=inactive["id"]) == []
    assert events.matching("auth.password.reset_requested", email=unknown) == []


async def test_request_verify_token_answers_alike_for_any_account_state(
    client: AsyncClient, events: EventTap
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
    await asyncio.sleep(0.3)
    assert len(events.matching("auth.user.registered", user_id=verified["id"])) == 1


async def test_forgot_password_repeated_sends_one_mail_per_cooldown(
    client: AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await register(client)

    answers = [
        await client.post("/auth/v1/forgot-password", json={"email": user["email"]})
        for _ in range(3)
    ]

    assert [a.status_code for a in answers] == [202, 202, 202]
    async with sessions() as session:
        sent = await session.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(
                OutboxEvent.routing_key == "auth.password.reset_requested",
                OutboxEvent.payload["user_id"].astext == user["id"],
            )
        )
    assert sent == 1
