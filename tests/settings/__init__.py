"""Tests of cavra_ingest/settings."""
