"""A client for agent fleets: batching, retries, a crash-safe spool and time-ordered ids (docs/sending.md).

Imports: nothing of the project. It ships to agent hosts with its own dependencies only.
"""

from cavra_ingest.client.core import Client
from cavra_ingest.client.ids import new_decision_id
from cavra_ingest.client.items import Stats
from cavra_ingest.client.sync import SyncClient

__all__ = ["Client", "Stats", "SyncClient", "new_decision_id"]
