"""Background workers: the batch writer, the JetStream consumer, the search indexer and the counts folder.

Imports: core, settings, auditlog, store, broker. Only the wiring (cavra_ingest.runtime) imports workers.
"""
