"""audit records: one hash-chained record per answer

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_records',
    # BIGINT on PostgreSQL; SQLite autoincrements only a column declared exactly INTEGER
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('principal', sa.Text(), nullable=False),
    sa.Column('collections', sa.JSON(), nullable=False),
    sa.Column('collections_key', sa.Text(), nullable=False),
    sa.Column('question', sa.Text(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('id'),
    sa.UniqueConstraint('prev_hash'),
    sa.UniqueConstraint('hash'),
    # AUTOINCREMENT keeps SQLite from reusing the seq of a deleted last record
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.create_index('ix_audit_records_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_audit_records_principal', ['principal'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_records_principal')
        batch_op.drop_index('ix_audit_records_created_at')

    op.drop_table('audit_records')
