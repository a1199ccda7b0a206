"""A client for agent fleets: batching, retries, a crash-safe spool and time-ordered ids (docs/sending.md)."""

from .core import Client, Stats
from .ids import new_decision_id
from .sync import SyncClient

__all__ = ["Client", "Stats", "SyncClient", "new_decision_id"]
