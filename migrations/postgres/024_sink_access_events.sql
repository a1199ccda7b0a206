-- Sinks may stream the access events too (docs/streaming.md, "Access events"): `events` says which streams a
-- sink follows (space-separated: decisions, access). Each stream has its own cursor.
-- As with decisions (021), an id alone is not commit order when several processes write: each access event
-- also keeps its transaction id, and a sink reads (xid, id) in order below the snapshot's xmin only, so an
-- event whose transaction commits late is never skipped.
ALTER TABLE access_events ADD COLUMN IF NOT EXISTS stream_xid BIGINT NOT NULL
    DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX IF NOT EXISTS access_events_stream ON access_events (stream_xid, id);
ALTER TABLE sinks ADD COLUMN IF NOT EXISTS events TEXT NOT NULL DEFAULT 'decisions';
ALTER TABLE sink_cursors ADD COLUMN IF NOT EXISTS access_hi BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sink_cursors ADD COLUMN IF NOT EXISTS access_lo BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sink_cursors ADD COLUMN IF NOT EXISTS access_delivered BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sink_dead_letters ADD COLUMN IF NOT EXISTS stream TEXT NOT NULL DEFAULT 'decisions';
