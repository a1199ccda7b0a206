"""JetStream: the replicated log that replicas publish to before a 202 (docs/scale-out.md).

Imports: core, settings.
"""
