"""Tests of cavra_ingest/http.

Named web/: a folder tests/http would shadow the standard library's `http` for scripts run from tests/.
"""
