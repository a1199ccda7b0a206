"""Tests of cavra_ingest/broker."""
