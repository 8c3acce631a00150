"""HTTP routes: preferences, history, the one-click unsubscribe, the digest run; escaping."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from urllib.parse import urlsplit

import pytest
from faststream.rabbit import RabbitBroker
from sqlalchemy import text

from contracts.broker import publish_event
from contracts.events import RecommendationsGenerated, RecommendedItem
from notifications_service.models import DeliveryStatus, Recipient
from notifications_service.scheduler import run_digest_round
from notifications_service.service import record_recommendations
from notifications_service.unsubscribe import make_token
from tests.notifications.conftest import (
    FakeRecom,
    Service,
    body,
    create_recipient,
    deliveries,
    publish,
)
from tests.notifications.sink import SmtpSink
from tests.support import bearer, wait_for
from tests.support import make_token as make_access_token


async def test_preferences_follow_every_frequency_for_viewer(service: Service) -> None:
    async with service.sessionmaker() as session:
        viewer = await create_recipient(session, email="pat@example.com")
    headers = bearer(make_access_token(viewer.user_id))
    expected = {
        "user_id": str(viewer.user_id),
        "email": "pat@example.com",
        "is_verified": True,
        "digest_frequency": "daily",
        "subscribed": True,
    }

    response = await service.client.get("/notifications/v1/preferences", headers=headers)
    assert (response.status_code, response.json()) == (200, expected)
    for frequency in ("off", "immediate", "weekly", "daily"):
        response = await service.client.put(
            "/notifications/v1/preferences", headers=headers, json={"digest_frequency": frequency}
        )
        assert (response.status_code, response.json()) == (
            200,
            {**expected, "digest_frequency": frequency},
        )
    response = await service.client.put(
        "/notifications/v1/preferences", headers=headers, json={"subscribed": False}
    )
    assert (response.status_code, response.json()) == (200, {**expected, "subscribed": False})
    response = await service.client.get("/notifications/v1/preferences", headers=headers)
    assert response.json() == {**expected, "subscribed": False}


@pytest.mark.parametrize(
    "payload", [{"digest_frequency": "hourly"}, {"digest_frequency": None, "colour": "red"}]
)
async def test_preferences_reject_bad_body(service: Service, payload: dict[str, object]) -> None:
    async with service.sessionmaker() as session:
        viewer = await create_recipient(session)
    response = await service.client.put(
        "/notifications/v1/preferences",
        headers=bearer(make_access_token(viewer.user_id)),
        json=payload,
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "VALIDATION_ERROR"


async def test_preferences_answer_401_without_token_and_404_for_unknown_viewer(
    service: Service,
) -> None:
    response = await service.client.get("/notifications/v1/preferences")
    assert (response.status_code, response.json()) == (401, {"detail": "NOT_AUTHENTICATED"})
    response = await service.client.get(
        "/notifications/v1/preferences", headers=bearer(make_access_token(uuid.uuid4()))
    )
    assert (response.status_code, response.json()) == (404, {"detail": "RECIPIENT_NOT_FOUND"})


async def test_one_click_unsubscribe_from_digest_headers_stops_digests(
    service: Service, broker: RabbitBroker, recom: FakeRecom, smtp_sink: SmtpSink
) -> None:
    async with service.sessionmaker() as session:
        viewer = await create_recipient(session)
    admin = bearer(make_access_token(superuser=True))
    response = await service.client.post("/notifications/v1/digests/run", headers=admin)
    assert (response.status_code, response.json()) == (200, {"requested": 1})

    async def mailed() -> bool:
        return bool(smtp_sink.to(viewer.email))

    await wait_for(mailed)
    [message] = smtp_sink.to(viewer.email)
    link = message["List-Unsubscribe"].strip("<>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link.startswith("http://localhost:8000/notifications/v1/unsubscribe/")
    assert link in body(message, "plain")
    assert f'href="{link}"' in body(message, "html")
    path = urlsplit(link).path

    page = await service.client.get(path)
    assert page.status_code == 200
    assert f'<form method="post" action="{path}">' in page.text
    # RFC 8058: the mail client POSTs this form body, with no cookie and no token.
    response = await service.client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert (response.status_code, response.json()) == (
        200,
        {"user_id": str(viewer.user_id), "subscribed": False},
    )
    again = await service.client.post(path, headers={"Accept": "text/html"})
    assert again.status_code == 200
    assert "will get no more recommendation e-mails" in again.text

    preferences = await service.client.get(
        "/notifications/v1/preferences", headers=bearer(make_access_token(viewer.user_id))
    )
    assert preferences.json()["subscribed"] is False
    async with service.sessionmaker() as session:
        other = await create_recipient(session)
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    requested = await run_digest_round(
        service.sessionmaker, partial(publish_event, broker), service.settings, now=tomorrow
    )
    assert requested == 1
    await wait_for(lambda: _requested(recom, 2))
    assert recom.requested() == [viewer.user_id, other.user_id]


async def _requested(recom: FakeRecom, count: int) -> bool:
    return len(recom.requested()) == count


async def test_unsubscribe_rejects_tampered_token(service: Service) -> None:
    async with service.sessionmaker() as session:
        viewer = await create_recipient(session)
    good = make_token(viewer.user_id, service.settings.unsubscribe_secret.get_secret_value())
    flipped = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    other_secret = make_token(viewer.user_id, "not-the-secret")
    other_user = good[:3] + ("x" if good[3] != "x" else "y") + good[4:]
    for token in (flipped, other_secret, other_user, "abc", "é" * 44):
        for method in ("GET", "POST"):
            response = await service.client.request(
                method, f"/notifications/v1/unsubscribe/{token}"
            )
            assert (response.status_code, response.json()) == (
                400,
                {"detail": "UNSUBSCRIBE_TOKEN_INVALID"},
            ), token
    async with service.sessionmaker() as session:
        stored = await session.get(Recipient, viewer.user_id)
    assert stored is not None
    assert stored.unsubscribed_at is None


async def test_titles_escaped_in_html_and_kept_as_text(
    service: Service, broker: RabbitBroker, smtp_sink: SmtpSink
) -> None:
    async with service.sessionmaker() as session:
        viewer = await create_recipient(
            session, digest_frequency="immediate", full_name="<i>Ann</i>"
        )
    title = "<script>alert('x')</script>"
    await publish(
        broker,
        RecommendationsGenerated(
            user_id=viewer.user_id,
            items=[
                RecommendedItem(
                    movie_id=uuid.uuid4(), title=title, score=8.5, reason="Fans of <b>Heat</b> & co"
                )
            ],
            strategy="user-user-cosine",
            trigger="request",
        ),
    )

    async def mailed() -> bool:
        return bool(smtp_sink.to(viewer.email))

    await wait_for(mailed)
    [message] = smtp_sink.to(viewer.email)
    html, text = body(message, "html"), body(message, "plain")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "Fans of &lt;b&gt;Heat&lt;/b&gt; &amp; co" in html
    assert "Hello &lt;i&gt;Ann&lt;/i&gt;," in html
    assert f"1. {title}\n   Fans of <b>Heat</b> & co" in text


async def test_digest_run_refused_to_non_superuser(service: Service) -> None:
    response = await service.client.post(
        "/notifications/v1/digests/run", headers=bearer(make_access_token())
    )
    assert (response.status_code, response.json()) == (403, {"detail": "FORBIDDEN"})


async def test_history_orders_emails_by_when_they_were_decided_not_by_transaction_start(
    service: Service,
) -> None:
    """Two picks events of one viewer: the transaction that started first but waited for the
    recipient's lock decides second (throttled), so the history lists it as the newer one."""
    async with service.sessionmaker() as session:
        viewer = await create_recipient(session, digest_frequency="immediate")

    def picks() -> RecommendationsGenerated:
        return RecommendationsGenerated(
            user_id=viewer.user_id,
            items=[RecommendedItem(movie_id=uuid.uuid4(), title="Heat", score=9)],
            strategy="user_knn_cosine",
            trigger="request",
        )

    async with service.sessionmaker() as early, service.sessionmaker() as late:
        await early.execute(text("SELECT 1"))  # its transaction (and now()) starts here
        assert await record_recommendations(late, picks(), service.settings) is True
        assert await record_recommendations(early, picks(), service.settings) is False
    response = await service.client.get(
        "/notifications/v1/history?limit=10", headers=bearer(make_access_token(viewer.user_id))
    )
    newer, older = response.json()["items"]
    assert newer["status"] == "skipped"
    assert older["status"] != "skipped"  # queued, and perhaps sent by now


async def test_history_lists_only_own_emails_newest_first(
    service: Service, broker: RabbitBroker
) -> None:
    async with service.sessionmaker() as session:
        viewer = await create_recipient(session, digest_frequency="immediate")
        other = await create_recipient(session, digest_frequency="immediate")
    for user_id in (viewer.user_id, viewer.user_id, other.user_id):
        await publish(
            broker,
            RecommendationsGenerated(
                user_id=user_id,
                items=[RecommendedItem(movie_id=uuid.uuid4(), title="Heat", score=9)],
                strategy="user-user-cosine",
                trigger="request",
            ),
        )

    async def recorded() -> bool:
        rows = await deliveries(service.sessionmaker, viewer.user_id)
        return len(rows) == 2 and rows[0].status == DeliveryStatus.SENT

    await wait_for(recorded)
    response = await service.client.get(
        "/notifications/v1/history?limit=10", headers=bearer(make_access_token(viewer.user_id))
    )
    assert response.status_code == 200
    items = response.json()["items"]
    assert [(i["kind"], i["status"], i["subject"]) for i in items] == [
        ("recommendations", "skipped", "New film picks for you"),
        ("recommendations", "sent", "New film picks for you"),
    ]
