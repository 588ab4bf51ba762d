"""Evaluation of retrieval (BEIR) and answers (SQuAD/HotpotQA-style) against kag's real pipeline."""
