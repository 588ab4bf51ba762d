"""page spans and root-relative source paths on documents; graph offsets made document-absolute

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-04 21:00:00.000000

- `documents.page_spans`: [[page, start, end], ...] into the document text, so a citation gets the
  page of its quote's start (not its chunk's); NULL for documents without pages and for documents
  ingested before this revision (their citations fall back to the chunk's page).
- `documents.source_path`: the file's path relative to the folder it was ingested from, shown
  instead of the server's absolute path (`KAG_SOURCE_URI`); NULL before this revision.
- `relations.evidence_start/end` and `mentions.start/end` were offsets into the chunk text; they
  become offsets into the document text, like every other offset the ledger stores, by adding the
  chunk's `char_start`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0005'
branch_labels = None
depends_on = None


def _shift(sign: int) -> None:
    """Add (sign=1) or subtract (sign=-1) each row's chunk start; Core, so both dialects quote `end` right."""
    chunks = sa.table('chunks', sa.column('id'), sa.column('char_start'))
    for name, start, end in (('relations', 'evidence_start', 'evidence_end'), ('mentions', 'start', 'end')):
        table = sa.table(name, sa.column('chunk_id'), sa.column(start), sa.column(end))
        offset = sa.select(chunks.c.char_start).where(chunks.c.id == table.c.chunk_id).scalar_subquery()
        op.execute(
            table.update().values({start: table.c[start] + sign * offset, end: table.c[end] + sign * offset})
        )


def upgrade() -> None:
    # plain ALTER TABLE ADD COLUMN on both dialects: nothing is rebuilt, so nothing can cascade
    op.add_column('documents', sa.Column('page_spans', sa.JSON(), nullable=True))
    op.add_column('documents', sa.Column('source_path', sa.Text(), nullable=True))
    _shift(1)


def downgrade() -> None:
    _shift(-1)
    # a plain ALTER TABLE DROP COLUMN (SQLite >= 3.35), not a batch: batch mode rebuilds `documents` on
    # SQLite, and dropping the old table would cascade-delete every chunk, mention and relation
    op.drop_column('documents', 'source_path')
    op.drop_column('documents', 'page_spans')
