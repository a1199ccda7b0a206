"""JetStream: the replicated log that replicas publish to before a 202 (docs/scaling.md).

Imports: core, settings.
"""
