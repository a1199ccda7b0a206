-- Streaming sinks (docs/streaming.md): where committed decisions are delivered, each with its own cursor.
-- Several writers commit at once, so a sequence number alone is not commit order (a lower number may commit
-- later). Each row also keeps its transaction id: rows whose transaction is older than every running one
-- (the snapshot's xmin) are complete, and a sink reads (xid, seq) in order up to there: no row is skipped.
CREATE SEQUENCE IF NOT EXISTS activity_decisions_stream_seq;
ALTER TABLE activity_decisions ADD COLUMN IF NOT EXISTS stream_xid BIGINT NOT NULL
    DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE activity_decisions ADD COLUMN IF NOT EXISTS stream_seq BIGINT NOT NULL
    DEFAULT nextval('activity_decisions_stream_seq');
CREATE INDEX IF NOT EXISTS idx_activity_decisions_stream ON activity_decisions (stream_xid, stream_seq);
CREATE TABLE IF NOT EXISTS sinks (
    name TEXT COLLATE "C" PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    filter TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'active',
    tenant_id TEXT COLLATE "C",
    secret_box TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sink_cursors (
    name TEXT COLLATE "C" PRIMARY KEY,
    pos_hi BIGINT NOT NULL DEFAULT 0,
    pos_lo BIGINT NOT NULL DEFAULT 0,
    delivered BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    last_success_at DOUBLE PRECISION,
    caught_up_at DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS sink_dead_letters (
    id BIGSERIAL PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    decision_id TEXT COLLATE "C" NOT NULL,
    payload TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    dead_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_sink_dead_letters_name ON sink_dead_letters (name, id);
CREATE TABLE IF NOT EXISTS sink_leases (
    name TEXT COLLATE "C" PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
