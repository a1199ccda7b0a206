"""Rules without I/O: the decision records and their validation, batch planning, session summaries, errors.

Imports: nothing of the project. No aiohttp, no database driver: everything here is pure and testable alone.
"""
