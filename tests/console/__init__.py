"""Tests of cavra_ingest/console."""
