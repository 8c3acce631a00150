"""The e-mail directory (recipient) and the delivery log (delivery).

Revision ID: 20261128_01
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261128_01"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recipient",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("full_name", sa.String(length=255), server_default="", nullable=False),
        sa.Column("is_verified", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("digest_frequency", sa.String(length=16), server_default="daily", nullable=False),
        sa.Column("unsubscribed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_immediate_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "digest_frequency IN ('off', 'immediate', 'daily', 'weekly')",
            name=op.f("ck_recipient_digest_frequency"),
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_recipient")),
    )
    op.create_table(
        "delivery",
        sa.Column("delivery_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("period", sa.String(length=16), nullable=True),
        sa.Column("to_address", sa.String(length=320), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body_text", sa.Text(), nullable=True),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("unsubscribe_url", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("requests", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('confirmation', 'password_reset', 'recommendations', 'digest')",
            name=op.f("ck_delivery_kind"),
        ),
        sa.CheckConstraint(
            "status IN ('awaiting', 'pending', 'sent', 'failed', 'skipped')",
            name=op.f("ck_delivery_status"),
        ),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_delivery")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_delivery_dedup_key")),
    )
    op.create_index(
        "ix_delivery_awaiting",
        "delivery",
        ["user_id"],
        postgresql_where=sa.text("status = 'awaiting'"),
    )
    op.create_index(
        "ix_delivery_due",
        "delivery",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_delivery_user_id_created_at", "delivery", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_delivery_user_id_created_at", table_name="delivery")
    op.drop_index("ix_delivery_due", table_name="delivery")
    op.drop_index("ix_delivery_awaiting", table_name="delivery")
    op.drop_table("delivery")
    op.drop_table("recipient")
