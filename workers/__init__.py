"""Background workers of cavra-ingest."""
