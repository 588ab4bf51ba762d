"""Ingestion's stages, one module each.

Stage 1 makes a document searchable: `prepare` (read, parse, chunk) then `embed` (embed, write the
ledger rows, Qdrant and the lexical index, mark `indexed`). Stage 2, `graph`, extracts entities and
relations of indexed documents afterwards (in the same `kag ingest` run, later with `kag graph
build`, or in the API server's background), each document's graph in one ledger transaction.
"""
