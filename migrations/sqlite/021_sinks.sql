-- Streaming sinks (docs/streaming.md): where committed decisions are delivered, each with its own cursor.
-- SQLite's single writer hands out rowids in commit order: a sink's position is the last rowid it delivered.
-- The signing secret is kept encrypted (store/sinks.py), never in clear.
CREATE TABLE IF NOT EXISTS sinks (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    filter TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'active',
    tenant_id TEXT,
    secret_box TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sink_cursors (
    name TEXT PRIMARY KEY,
    pos_hi INTEGER NOT NULL DEFAULT 0,
    pos_lo INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_success_at REAL,
    caught_up_at REAL
);
CREATE TABLE IF NOT EXISTS sink_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    dead_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_sink_dead_letters_name ON sink_dead_letters (name, id);
-- One process delivers each sink: it holds the lease until `expires_at` (epoch seconds) and renews it.
CREATE TABLE IF NOT EXISTS sink_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
