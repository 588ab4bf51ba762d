"""Sizes in messages and settings: MB means 10^6 bytes everywhere in kag, as in the settings' names."""

from __future__ import annotations

MB = 1_000_000


def describe_size(n_bytes: int) -> str:
    """A measured size: `52.4 MB (52,428,800 bytes)`; the bytes keep a size just over a limit readable."""
    return f"{n_bytes / MB:.1f} MB ({n_bytes:,} bytes)"


def describe_limit(n_bytes: int) -> str:
    """A limit as its setting gives it: `50 MB`, `0.002 MB`."""
    return f"{n_bytes / MB:g} MB"
