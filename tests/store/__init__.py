"""Tests of cavra_ingest/store."""
