"""The README's story, through the gateway only: sign up, confirm, chat room, rate, picks, e-mail."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastapi_recom import movielens
from tests.e2e.conftest import Suite
from tests.support import bearer, wait_for
from tests.ws.client import ChatClient

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"
# Two tastes among 30 viewers: the first half loves films 1-15, the second films 16-30.
FILMS = 30
VIEWERS = 30


def write_dataset(folder: Path) -> Path:
    """A small catalogue in MovieLens' file format, where the right picks are known."""
    folder.mkdir(parents=True, exist_ok=True)
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"e2e-{n}\tStory Film {n:02d}\t2001\tDrama" for n in range(1, FILMS + 1)]
    (folder / "ml-100k.item").write_text("\n".join(items) + "\n")
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for viewer in range(1, VIEWERS + 1):
        liked = range(1, 16) if viewer <= VIEWERS // 2 else range(16, FILMS + 1)
        rows += [f"e2e-u{viewer}\te2e-{film}\t5\t978300000" for film in liked]
    (folder / "ml-100k.inter").write_text("\n".join(rows) + "\n")
    return folder


def load_demo(suite: Suite, data_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "fastapi_recom.demo", "--force", "--data-dir", str(data_dir)],
        env={**os.environ, **suite.env},
        check=True,
        timeout=300,
    )


def text_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no text part")


async def mail_to(suite: Suite, address: str, subject_part: str) -> Message:
    found: list[Message] = []

    async def arrived() -> bool:
        found[:] = [m for m in suite.mail.to(address) if subject_part in (m["Subject"] or "")]
        return bool(found)

    await wait_for(arrived, timeout=60, interval=0.2)
    return found[-1]


async def test_readme_story_from_sign_up_to_picks_in_room_and_inbox(
    suite: Suite, tmp_path: Path
) -> None:
    load_demo(suite, write_dataset(tmp_path / "story"))
    liked = {movielens.movie_uuid(f"e2e-{n}") for n in range(1, 16)}
    rated = [movielens.movie_uuid(f"e2e-{n}") for n in range(1, 11)]
    email = f"viewer-{uuid.uuid4().hex[:12]}@example.com"

    async with suite.client() as client:
        # Sign-up → confirmation e-mail with the short link → verified, lands on the chat page.
        registered = await client.post(
            "/auth/v1/register", json={"email": email, "password": PASSWORD, "full_name": "Ada"}
        )
        assert registered.status_code == 201, registered.text
        confirmation = await mail_to(suite, email, "onfirm")
        link = re.search(rf"{re.escape(suite.gateway)}/auth/v1/s/[\w-]+", text_of(confirmation))
        assert link is not None, text_of(confirmation)
        opened = await client.get(link.group(0))
        assert opened.status_code == 303
        assert opened.headers["location"].endswith("/ws/v1/chat/")
        page = await client.get("/ws/v1/chat/")
        assert page.status_code == 200
        assert "<html" in page.text.lower()

        login = await client.post(
            "/auth/v1/jwt/login", data={"username": email, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        me = await client.get("/auth/v1/users/me", headers=bearer(token))
        assert me.json()["is_verified"] is True
        user_id = me.json()["id"]

        # The personal room shows the welcome message over the WebSocket.
        room = await ChatClient.open(suite.gateway, token, origin=suite.gateway)
        try:
            history = await room.history()
            if not history:
                history = [await room.message(timeout=30)]
            assert history[0]["kind"] == "system"
            assert "Welcome" in history[0]["body"]

            # Ten ratings through UGC, each accepted only once the broker confirmed it.
            for movie_id in rated:
                answer = await client.post(
                    "/ugc/v1/ratings",
                    json={"movie_id": str(movie_id), "score": 10},
                    headers=bearer(token),
                )
                assert answer.status_code == 202, answer.text

            async def reflected() -> bool:
                held = await client.get(f"/recom/v1/user/{user_id}/ratings", headers=bearer(token))
                return held.status_code == 200 and len(held.json()["items"]) == 10

            await wait_for(reflected, timeout=30, interval=0.3)
            picks = await fresh_picks(client, user_id, token, rated)
            ids = [uuid.UUID(p["movie_id"]) for p in picks["recommendations"]]
            assert not set(ids) & set(rated)
            # Neighbours share the viewer's taste, so their other favourites come first.
            assert set(ids[:5]) <= liked - set(rated)

            # The same picks arrive in the open room as a card.
            async def card() -> bool:
                frame = await room.message(timeout=30)
                return (
                    frame["kind"] == "recommendations"
                    and [uuid.UUID(i["movie_id"]) for i in frame["items"]] == ids
                )

            await wait_for(card, timeout=60, interval=0)

            # With `immediate`, the next picks are e-mailed with their titles and an opt-out.
            preference = await client.put(
                "/notifications/v1/preferences",
                json={"digest_frequency": "immediate"},
                headers=bearer(token),
            )
            assert preference.status_code == 200, preference.text
            again = await client.get(f"/recom/v1/user/{user_id}?limit=5", headers=bearer(token))
            assert again.status_code == 200
            digest = await mail_to(suite, email, "New film picks")
            body = text_of(digest)
            for pick in again.json()["recommendations"]:
                assert pick["title"] in body
            # Signed up a minute ago: her first daily digest is tomorrow's, not one today.
            assert [m["Subject"] for m in suite.mail.to(email) if "picks" in m["Subject"]] == [
                "New film picks for you"
            ]
            assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            unsubscribe = re.search(
                r"<(http[^>]+/notifications/v1/unsubscribe/[^>]+)>", digest["List-Unsubscribe"]
            )
            assert unsubscribe is not None
            path = httpx.URL(unsubscribe.group(1)).raw_path.decode()
            opted_out = await client.post(path)
            assert opted_out.status_code == 200, opted_out.text
            now = await client.get("/notifications/v1/preferences", headers=bearer(token))
            assert now.json()["subscribed"] is False

            # What happened shows in the services' Prometheus metrics.
            ws_metrics = await metric_samples(client, "/ws/metrics")
            assert ws_metrics[("events_consumed_total", "handled")] >= 2
            assert ws_metrics[("ws_sockets_open", "")] >= 1
            mail_metrics = await metric_samples(client, "/notifications/metrics")
            assert mail_metrics[("notifications_emails_total", "sent")] >= 2
        finally:
            await room.close()


async def metric_samples(client: httpx.AsyncClient, path: str) -> dict[tuple[str, str], float]:
    """Sample values summed by (name, outcome label) from one service's /metrics."""
    answer = await client.get(path)
    assert answer.status_code == 200
    totals: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            key = (sample.name, sample.labels.get("outcome", ""))
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


async def fresh_picks(
    client: httpx.AsyncClient, user_id: str, token: str, rated: list[uuid.UUID]
) -> dict[str, Any]:
    """Picks once the recommender's matrix holds the ten ratings (within about a second) and
    its catalogue the story's films (until then it does not pick them)."""
    for _ in range(60):
        answer = await client.get(f"/recom/v1/user/{user_id}?limit=5", headers=bearer(token))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        ids = {uuid.UUID(p["movie_id"]) for p in body["recommendations"]}
        titles = [p["title"] or "" for p in body["recommendations"]]
        if not ids & set(rated) and all(t.startswith("Story Film") for t in titles):
            return body
        await asyncio.sleep(0.5)
    raise AssertionError(f"picks never reflected the ratings and the catalogue: {body}")
