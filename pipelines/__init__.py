"""The answer pipeline: retrieve -> rerank -> generate -> verify, and its evaluation."""
