"""relation evidence grades and source kinds: each relation says how well the corpus backs it

Revision ID: 0006
Revises: 0007 (numbered 0006 as assigned; chained after main's newest, 0007, so one head)
Create Date: 2026-12-04 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('relations') as batch:
        batch.add_column(sa.Column('grade', sa.String(1), nullable=False, server_default='C'))
        batch.add_column(sa.Column('source_kind', sa.String(16), nullable=False, server_default='document'))
        batch.create_index('ix_relations_pair_type', ['source_id', 'target_id', 'type'])
    # existing rows: B for a typed pattern (strength >= 0.6, see kag.ontology), A where two or more
    # documents state it; document metadata (reproducible, evidence_grade) applies from the next write
    op.execute("UPDATE relations SET grade = 'B' WHERE type <> 'RelatedTo' AND strength >= 0.6")
    op.execute(
        "UPDATE relations SET grade = 'A' WHERE type <> 'RelatedTo' AND strength >= 0.6 AND ("
        "SELECT COUNT(DISTINCT r2.document_id) FROM relations r2 WHERE r2.collection = relations.collection "
        "AND r2.source_id = relations.source_id AND r2.target_id = relations.target_id "
        "AND r2.type = relations.type AND r2.strength >= 0.6) >= 2"
    )


def downgrade() -> None:
    with op.batch_alter_table('relations') as batch:
        batch.drop_index('ix_relations_pair_type')
        batch.drop_column('source_kind')
        batch.drop_column('grade')
