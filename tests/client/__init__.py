"""Tests of cavra_ingest/client."""
