"""Tests of cavra_ingest/core."""
