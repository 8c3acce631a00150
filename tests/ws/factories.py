"""Events and database reads shared by the fastapi_ws tests."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import RecommendationsGenerated, RecommendedItem, UserVerified
from fastapi_ws.models import Message, Room
from tests.support import wait_for


def create_recommendations(
    user_id: uuid.UUID, titles: tuple[str, ...] = ("Alien", "Heat"), **overrides: Any
) -> RecommendationsGenerated:
    items = [
        RecommendedItem(
            movie_id=uuid.uuid5(uuid.NAMESPACE_URL, title), title=title, score=9.5 - i, reason=None
        )
        for i, title in enumerate(titles)
    ]
    fields: dict[str, Any] = {
        "user_id": user_id,
        "items": items,
        "strategy": "user_cosine",
        "trigger": "request",
    }
    return RecommendationsGenerated(**{**fields, **overrides})


def create_user_verified(user_id: uuid.UUID, **overrides: Any) -> UserVerified:
    fields: dict[str, Any] = {
        "user_id": user_id,
        "email": f"{user_id.hex[:12]}@example.com",
        "full_name": "Ada Viewer",
    }
    return UserVerified(**{**fields, **overrides})


async def stored_messages(
    db: async_sessionmaker[AsyncSession], user_id: uuid.UUID
) -> list[Message]:
    async with db() as session:
        rows = await session.scalars(
            select(Message).join(Room).where(Room.user_id == user_id).order_by(Message.seq)
        )
        return list(rows.all())


async def wait_for_messages(
    db: async_sessionmaker[AsyncSession], user_id: uuid.UUID, count: int
) -> list[Message]:
    async def enough() -> bool:
        return len(await stored_messages(db, user_id)) >= count

    await wait_for(enough, timeout=15)
    return await stored_messages(db, user_id)


def titles_of(frame: dict[str, Any]) -> list[str]:
    return [item["title"] for item in frame["items"]]
