"""How the sender meets SMTP: whose fault a failure is, internationalised addresses, TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import utcnow
from notifications_service.config import Settings
from notifications_service.models import Delivery, DeliveryStatus
from tests.notifications.conftest import Service, StartService
from tests.notifications.sink import SmtpSink
from tests.support import wait_for

MakeSink = Callable[..., SmtpSink]


@pytest.fixture
def make_sink() -> Iterator[MakeSink]:
    """A sink of its own for a test that needs other server behaviour than the shared one."""
    sinks: list[SmtpSink] = []

    def make(**smtp_options: Any) -> SmtpSink:
        sink = SmtpSink(**smtp_options)
        sink.start()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.stop()


async def create_delivery(session: AsyncSession, **overrides: Any) -> Delivery:
    key = uuid.uuid4()
    delivery = Delivery(
        dedup_key=overrides.pop("dedup_key", f"confirmation:{key}"),
        kind=overrides.pop("kind", "confirmation"),
        status=overrides.pop("status", DeliveryStatus.PENDING),
        user_id=overrides.pop("user_id", uuid.uuid4()),
        to_address=overrides.pop("to_address", f"viewer-{key.hex[:12]}@example.com"),
        subject=overrides.pop("subject", "Confirm your e-mail address"),
        body_text=overrides.pop("body_text", "Hello Ann Viewer,\n\nhttp://localhost/s/1\n"),
        **overrides,
    )
    session.add(delivery)
    await session.commit()
    return delivery


async def create_batch(
    db: async_sessionmaker[AsyncSession], *addresses: str | None
) -> list[Delivery]:
    """Due e-mails in this order, waiting before the service starts, so that its one
    connection claims them as one batch."""
    now = utcnow()
    async with db() as session:
        return [
            await create_delivery(
                session,
                to_address=address,
                next_attempt_at=now - dt.timedelta(minutes=len(addresses) - i),
            )
            for i, address in enumerate(addresses)
        ]


async def current(db: async_sessionmaker[AsyncSession], delivery: Delivery) -> Delivery:
    async with db() as session:
        row = await session.scalar(
            select(Delivery).where(Delivery.delivery_id == delivery.delivery_id)
        )
        assert row is not None
        return row


async def wait_settled(
    db: async_sessionmaker[AsyncSession],
    delivery: Delivery,
    reached: Callable[[Delivery], bool],
) -> Delivery:
    async def check() -> bool:
        return reached(await current(db, delivery))

    async def state() -> object:
        row = await current(db, delivery)
        return (row.to_address, row.status, row.attempts, row.last_error)

    # Generous: backoffs grow while the server stays unusable, and the machine may be busy.
    await wait_for(check, timeout=30, state=state)
    return await current(db, delivery)


def is_sent(row: Delivery) -> bool:
    return row.status == DeliveryStatus.SENT


@asynccontextmanager
async def sending(
    start_service: StartService, sink: SmtpSink, **env: str
) -> AsyncIterator[Service]:
    async with start_service(SMTP_PORT=str(sink.port), SMTP_CONNECTIONS="1", **env) as service:
        yield service


# ---------------------------------------------------------------- internationalised addresses


async def test_non_ascii_recipient_sent_with_smtputf8_and_next_email_goes_through(
    start_service: StartService, db: async_sessionmaker[AsyncSession], smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:8]
    joerg, after = await create_batch(db, f"jörg-{tag}@example.com", f"after-{tag}@example.com")

    async with sending(start_service, smtp_sink):
        assert (await wait_settled(db, joerg, is_sent)).attempts == 1
        assert (await wait_settled(db, after, is_sent)).attempts == 1

    [message] = smtp_sink.to(joerg.to_address or "")
    assert message["To"] == joerg.to_address
    assert len(smtp_sink.to(after.to_address or "")) == 1


async def test_non_ascii_recipient_failed_for_good_when_server_lacks_smtputf8(
    start_service: StartService, db: async_sessionmaker[AsyncSession], make_sink: MakeSink
) -> None:
    sink = make_sink(enable_SMTPUTF8=False)
    joerg, after = await create_batch(db, "jörg@example.com", "after@example.com")

    async with sending(start_service, sink):
        row = await wait_settled(db, joerg, lambda r: r.status == DeliveryStatus.FAILED)
        await wait_settled(db, after, is_sent)

    assert row.attempts == 1
    assert "SMTPUTF8" in (row.last_error or "")
    assert [r.recipient for r in sink.received] == ["after@example.com"]


async def test_internationalised_domain_sent_in_ascii_form_without_smtputf8(
    start_service: StartService, db: async_sessionmaker[AsyncSession], make_sink: MakeSink
) -> None:
    sink = make_sink(enable_SMTPUTF8=False)
    [ann] = await create_batch(db, "ann@exämple.com")

    async with sending(start_service, sink):
        await wait_settled(db, ann, is_sent)

    [message] = sink.to("ann@xn--exmple-cua.com")
    assert message["To"] == "ann@xn--exmple-cua.com"


async def test_unexpected_error_charges_an_attempt_and_the_batch_goes_on(
    start_service: StartService, db: async_sessionmaker[AsyncSession], smtp_sink: SmtpSink
) -> None:
    # No address: a state the consumers never write, so sending it meets a bug.
    broken, after = await create_batch(db, None, f"after-{uuid.uuid4().hex[:8]}@example.com")

    async with sending(start_service, smtp_sink):
        await wait_settled(db, after, is_sent)
        row = await wait_settled(db, broken, lambda r: r.attempts >= 1)

    assert row.status == DeliveryStatus.PENDING
    assert "AssertionError" in (row.last_error or "")
    assert len(smtp_sink.to(after.to_address or "")) == 1


# ---------------------------------------------------------------- whose fault a failure is


async def test_recipient_4xx_defers_that_email_alone(
    start_service: StartService, db: async_sessionmaker[AsyncSession], smtp_sink: SmtpSink
) -> None:
    full, *others = await create_batch(
        db, *(f"batch-{i}-{uuid.uuid4().hex[:8]}@example.com" for i in range(3))
    )
    smtp_sink.rcpt_script[full.to_address or ""] = ["452 4.2.2 Mailbox full"]

    # The deferred one is next due in ten minutes: the others must not wait for it.
    async with sending(start_service, smtp_sink, RETRY_BASE_SECONDS="600"):
        for other in others:
            await wait_settled(db, other, is_sent)
        row = await current(db, full)

    assert (row.status, row.attempts, row.last_error) == (
        DeliveryStatus.PENDING,
        1,
        "452 4.2.2 Mailbox full",
    )
    assert smtp_sink.to(full.to_address or "") == []


async def test_421_postpones_the_batch_without_charging_an_attempt(
    start_service: StartService, db: async_sessionmaker[AsyncSession], smtp_sink: SmtpSink
) -> None:
    closing, after = await create_batch(
        db, *(f"closing-{i}-{uuid.uuid4().hex[:8]}@example.com" for i in range(2))
    )
    smtp_sink.script[closing.to_address or ""] = ["421 4.7.0 Shutting down"]

    async with sending(start_service, smtp_sink):
        first = await wait_settled(db, closing, is_sent)
        second = await wait_settled(db, after, is_sent)

    assert (first.attempts, second.attempts) == (1, 1)
    assert smtp_sink.attempts[closing.to_address or ""] == 2


@pytest.mark.parametrize(
    "reply", ["550 5.7.1 Sender not allowed", "530 5.7.0 Authentication required"]
)
async def test_refused_sender_fails_no_email_and_the_fix_sends_them(
    start_service: StartService,
    db: async_sessionmaker[AsyncSession],
    smtp_sink: SmtpSink,
    reply: str,
) -> None:
    batch = await create_batch(
        db, *(f"sender-{i}-{uuid.uuid4().hex[:8]}@example.com" for i in range(3))
    )
    smtp_sink.mail_reply = reply
    try:
        async with sending(start_service, smtp_sink):
            await _refused_then_fixed(db, batch, reply, smtp_sink, "mail_reply", None)
    finally:
        smtp_sink.mail_reply = None


async def test_wrong_password_fails_no_email_and_the_fix_sends_them(
    start_service: StartService, db: async_sessionmaker[AsyncSession], make_sink: MakeSink
) -> None:
    sink = make_sink(auth_require_tls=False)
    sink.password = "right"
    batch = await create_batch(
        db, *(f"auth-{i}-{uuid.uuid4().hex[:8]}@example.com" for i in range(3))
    )

    env = {"SMTP_USER": "cinema", "SMTP_PASSWORD": "wrong", "SMTP_STARTTLS": "false"}
    async with sending(start_service, sink, **env):
        # The relay's account is given the password the service has.
        await _refused_then_fixed(db, batch, "535", sink, "password", "wrong")
    assert set(sink.logins) == {"cinema"}


async def _refused_then_fixed(
    db: async_sessionmaker[AsyncSession],
    batch: list[Delivery],
    reply: str,
    sink: SmtpSink,
    fix: str,
    fixed: object,
) -> None:
    """Every e-mail waits with the server's reply and no attempt charged; once the server
    is fixed, all are sent."""
    for delivery in batch:
        row = await wait_settled(db, delivery, lambda r: reply in (r.last_error or ""))
        assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 0)
    addresses = [delivery.to_address or "" for delivery in batch]
    assert [sink.to(address) for address in addresses] == [[]] * len(batch)

    setattr(sink, fix, fixed)
    for delivery in batch:
        assert (await wait_settled(db, delivery, is_sent)).attempts == 1
    assert [len(sink.to(address)) for address in addresses] == [1] * len(batch)


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A CA and a certificate it signed for 127.0.0.1: (CA file, certificate, key)."""
    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test mail CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
def server_tls(
    certificate: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> ssl.SSLContext:
    """The server side's TLS context; the service trusts its CA (and only it) meanwhile."""
    ca, cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize(
    ("server_option", "env"),
    [
        pytest.param("tls_context", {"SMTP_STARTTLS": "auto"}, id="STARTTLS offered, auto"),
        pytest.param(
            "ssl_context", {"SMTP_TLS": "true", "SMTP_STARTTLS": "false"}, id="implicit TLS"
        ),
    ],
)
async def test_mail_goes_encrypted_when_server_speaks_tls(
    start_service: StartService,
    db: async_sessionmaker[AsyncSession],
    make_sink: MakeSink,
    server_tls: ssl.SSLContext,
    server_option: str,
    env: dict[str, str],
) -> None:
    sink = make_sink(**{server_option: server_tls})
    [delivery] = await create_batch(db, "tls@example.com")

    async with sending(start_service, sink, **{"SMTP_STARTTLS": "auto", **env}):
        await wait_settled(db, delivery, is_sent)

    assert [(r.recipient, r.tls) for r in sink.received] == [("tls@example.com", True)]


async def test_password_never_sent_in_clear_when_server_offers_no_starttls(
    start_service: StartService, db: async_sessionmaker[AsyncSession], make_sink: MakeSink
) -> None:
    sink = make_sink(auth_require_tls=False)
    sink.password = "secret"
    [delivery] = await create_batch(db, "clear@example.com")

    env = {"SMTP_USER": "cinema", "SMTP_PASSWORD": "secret", "SMTP_STARTTLS": "auto"}
    async with sending(start_service, sink, **env):
        row = await wait_settled(db, delivery, lambda r: r.last_error is not None)

    assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 0)
    assert "STARTTLS" in (row.last_error or "")
    assert (sink.logins, sink.received) == ([], [])


@pytest.mark.parametrize(
    ("env", "start_tls"),
    [
        ({}, None),
        ({"smtp_starttls": "auto"}, None),
        ({"smtp_starttls": ""}, None),
        ({"smtp_starttls": "true"}, True),
        ({"smtp_starttls": "false"}, False),
        ({"smtp_user": "cinema"}, True),
        ({"smtp_user": "cinema", "smtp_starttls": "auto"}, True),
        ({"smtp_user": "cinema", "smtp_starttls": "false"}, False),
        ({"smtp_tls": "true"}, False),
    ],
)
def test_starttls_setting_is_auto_on_or_off_and_insists_with_a_user(
    env: dict[str, str], start_tls: bool | None
) -> None:
    settings = Settings(_env_file=None, unsubscribe_secret="s", **env)  # type: ignore[arg-type]
    assert settings.smtp_start_tls is start_tls


def test_implicit_tls_and_required_starttls_refused_together() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        Settings(_env_file=None, unsubscribe_secret="s", smtp_tls="true", smtp_starttls="true")
