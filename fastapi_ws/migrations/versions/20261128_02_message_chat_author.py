"""An index for the chat rate limit: an author's newest chat messages in a room.

Revision ID: 20261128_02
Revises: 20261128_01
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261128_02"
down_revision: str | None = "20261128_01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Partial: only chat counts towards the limit, and recommendations make up most rows.
    op.create_index(
        "ix_message_chat_author",
        "message",
        ["room_id", "author", "seq"],
        postgresql_where=sa.text("kind = 'chat'"),
    )


def downgrade() -> None:
    op.drop_index("ix_message_chat_author", table_name="message")
