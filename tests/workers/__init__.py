"""Tests of the background workers (workers/)."""
