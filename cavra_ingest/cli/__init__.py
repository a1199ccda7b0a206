"""The `cavra-ingest` command: one module per command group (serve, tokens, lifecycle, audit, verify, send).

Imports: anything. It is the top layer, with the wiring it starts.
"""
