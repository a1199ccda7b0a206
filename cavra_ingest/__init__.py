"""cavra-ingest: durable, searchable records of what AI agents tried and what policy decided."""

__version__ = "0.1.0"
