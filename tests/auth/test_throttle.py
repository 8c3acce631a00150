"""Failed logins are throttled per account and per client address, with Retry-After, never for good."""

import asyncio

from httpx import AsyncClient

from fastapi_auth.main import app
from tests.auth.helpers import PASSWORD, StartAuth, client_of, login, new_email, register

THROTTLED = {"detail": "LOGIN_THROTTLED"}


async def failed_login(client: AsyncClient, email: str) -> int:
    response = await client.post(
        "/auth/v1/jwt/login", data={"username": email, "password": "wrong-password-0"}
    )
    return response.status_code


async def test_login_failures_per_account_throttle_from_any_address(
    start_auth: StartAuth,
) -> None:
    client = await start_auth(
        login_max_failures_per_account=3,
        login_max_failures_per_ip=100,
        login_failure_window_seconds=60,
    )
    email = new_email()
    await register(client, email)
    async with client_of(app, "10.9.8.7") as elsewhere:
        assert [await failed_login(client, email) for _ in range(2)] == [400, 400]
        # Failures count per account whatever the address they come from.
        assert await failed_login(elsewhere, email) == 400
        throttled = await client.post(
            "/auth/v1/jwt/login", data={"username": email, "password": PASSWORD}
        )
        from_elsewhere = await elsewhere.post(
            "/auth/v1/jwt/login", data={"username": email, "password": PASSWORD}
        )

    assert throttled.status_code == 429
    assert throttled.json() == THROTTLED
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert from_elsewhere.status_code == 429
    # Another account from the same address is not affected.
    other = new_email()
    await register(client, other)
    await login(client, other)


async def test_login_throttle_lifts_after_retry_after(start_auth: StartAuth) -> None:
    client = await start_auth(login_max_failures_per_account=1, login_failure_window_seconds=2)
    email = new_email()
    await register(client, email)
    assert await failed_login(client, email) == 400

    throttled = await client.post(
        "/auth/v1/jwt/login", data={"username": email, "password": PASSWORD}
    )
    assert throttled.status_code == 429
    retry_after = int(throttled.headers["retry-after"])
    assert 1 <= retry_after <= 2

    await asyncio.sleep(retry_after + 0.1)
    await login(client, email)


async def test_login_failures_per_address_throttle_that_address_only(
    start_auth: StartAuth,
) -> None:
    client = await start_auth(
        client_address="192.0.2.10",
        login_max_failures_per_account=100,
        login_max_failures_per_ip=4,
        login_failure_window_seconds=60,
    )
    email = new_email()
    await register(client, email)

    # Spraying many accounts (existing or not) from one address.
    assert [await failed_login(client, new_email()) for _ in range(4)] == [400] * 4
    throttled = await client.post(
        "/auth/v1/jwt/login", data={"username": email, "password": PASSWORD}
    )

    assert (throttled.status_code, throttled.json()) == (429, THROTTLED)
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    async with client_of(app, "192.0.2.11") as other_address:
        await login(other_address, email)


async def test_login_success_clears_account_failures(start_auth: StartAuth) -> None:
    client = await start_auth(login_max_failures_per_account=3, login_max_failures_per_ip=100)
    email = new_email()
    await register(client, email)

    for _ in range(3):
        assert [await failed_login(client, email) for _ in range(2)] == [400, 400]
        await login(client, email)


async def test_failures_from_others_do_not_keep_the_owner_out_of_an_address_they_used(
    start_auth: StartAuth,
) -> None:
    client = await start_auth(
        client_address="198.51.100.7",
        login_max_failures_per_account=3,
        login_max_failures_per_ip=100,
        login_failure_window_seconds=60,
    )
    email = new_email()
    await register(client, email)
    await login(client, email)  # the owner's address from now on

    async with (
        client_of(app, "203.0.113.1") as attacker,
        client_of(app, "203.0.113.2") as accomplice,
        client_of(app, "192.0.2.99") as new_place,
    ):
        assert [await failed_login(attacker, email) for _ in range(3)] == [400] * 3
        assert await failed_login(accomplice, email) == 429
        # The account's count holds every other address, the right password included...
        for stranger in (attacker, accomplice, new_place):
            answer = await stranger.post(
                "/auth/v1/jwt/login", data={"username": email, "password": PASSWORD}
            )
            assert (answer.status_code, answer.json()) == (429, THROTTLED)
        # ...but not the owner's own address, which only its own failures can hold.
        await login(client, email)
        assert [await failed_login(client, email) for _ in range(3)] == [400] * 3
        held = await client.post(
            "/auth/v1/jwt/login", data={"username": email, "password": PASSWORD}
        )
        assert (held.status_code, held.json()) == (429, THROTTLED)
