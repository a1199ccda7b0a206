"""Tests of cavra_ingest/cli."""
