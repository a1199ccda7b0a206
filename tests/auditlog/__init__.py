"""Tests of cavra_ingest/auditlog."""
