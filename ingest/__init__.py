"""Ingestion: sources -> loaders -> chunking -> extraction -> embedding -> indexing."""
