"""A delivery kind for the notice to a viewer's previous address that it was changed.

Revision ID: 20261128_03
Revises: 20261128_02
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261128_03"
down_revision: str | None = "20261128_02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = "'confirmation', 'password_reset', 'recommendations', 'digest'"


def _kinds(kinds: str) -> None:
    op.drop_constraint(op.f("ck_delivery_kind"), "delivery", type_="check")
    op.create_check_constraint(op.f("ck_delivery_kind"), "delivery", f"kind IN ({kinds})")


def upgrade() -> None:
    _kinds(f"{_BEFORE}, 'email_changed'")


def downgrade() -> None:
    op.execute("DELETE FROM delivery WHERE kind = 'email_changed'")
    _kinds(_BEFORE)
