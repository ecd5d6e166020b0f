"""the orchestrator's tables: debug modes, pending routers, leases

Revision ID: 0001
Revises:
Create Date: 2026-12-02 17:00:00

``astara_debug_modes`` existed before migrations did (made by
``create_all``): a table already there is kept, not made again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "astara_debug_modes" not in existing:
        op.create_table(
            "astara_debug_modes",
            sa.Column("scope", sa.String(16), primary_key=True),
            sa.Column("id", sa.String(255), primary_key=True),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("since", sa.Float(), nullable=False),
        )
    op.create_table(
        "astara_pending",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("router_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_astara_pending_router_id", "astara_pending", ["router_id", "id"])
    op.create_table(
        "astara_leases",
        sa.Column("router_id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_astara_leases_owner", "astara_leases", ["owner"])


def downgrade() -> None:
    op.drop_table("astara_leases")
    op.drop_table("astara_pending")
