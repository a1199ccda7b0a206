"""The HTTP layer: the app factory, middleware, replies, OpenAPI, and routes/ (one module per resource).

Imports: core, settings, auditlog, store, console, runtime (the wiring). Handlers build no SQL.
"""
