"""ingest stages: per-document graph status (stage 2), the job that wrote a document, job owners and heartbeats

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('documents') as batch:
        batch.add_column(sa.Column('graph_status', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('graph_error', sa.Text(), nullable=True))
        batch.add_column(sa.Column('job_id', sa.String(length=64), nullable=True))
        batch.create_index('ix_documents_collection_graph_status', ['collection', 'graph_status'], unique=False)
        batch.create_index(batch.f('ix_documents_job_id'), ['job_id'], unique=False)
    # documents written before stages existed got their graph in the same transaction as their chunks
    op.execute("UPDATE documents SET graph_status = 'done'")
    with op.batch_alter_table('ingest_jobs') as batch:
        batch.add_column(sa.Column('owner_host', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('owner_pid', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ingest_jobs') as batch:
        batch.drop_column('heartbeat_at')
        batch.drop_column('owner_pid')
        batch.drop_column('owner_host')
    with op.batch_alter_table('documents') as batch:
        batch.drop_index(batch.f('ix_documents_job_id'))
        batch.drop_index('ix_documents_collection_graph_status')
        batch.drop_column('job_id')
        batch.drop_column('graph_error')
        batch.drop_column('graph_status')
