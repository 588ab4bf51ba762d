"""entity name vectors: each entity's name embedded once, at ingest, for query-time linking

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('entities') as batch:
        batch.add_column(sa.Column('name_vector', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('entities') as batch:
        batch.drop_column('name_vector')
