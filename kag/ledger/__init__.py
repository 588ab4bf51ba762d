"""The SQL ledger: the source of truth from which every index can be rebuilt."""

from kag.ledger.models import Base
from kag.ledger.store import Ledger

__all__ = ["Base", "Ledger"]
