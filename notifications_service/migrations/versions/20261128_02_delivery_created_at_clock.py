"""delivery.created_at is the insert's moment (clock_timestamp()), not the transaction's start.

Two events of one viewer wait on the recipient's row lock; the one that waited decides (and
inserts) second, yet `now()` stamped it with its earlier start, so the history's newest-first
order could show the e-mail decided first as the newer one.

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
    op.alter_column("delivery", "created_at", server_default=sa.text("clock_timestamp()"))


def downgrade() -> None:
    op.alter_column("delivery", "created_at", server_default=sa.text("now()"))
