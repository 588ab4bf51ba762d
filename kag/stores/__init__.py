"""The derived indexes: dense vectors (Qdrant), full text (Tantivy), knowledge graph (networkx)."""
