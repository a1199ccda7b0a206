-- Without a global write lock, concurrent transactions commit in no order the writer can see, so a
-- decision's transaction no longer numbers its leaf: it queues the decision here, and one sequencer at a
-- time (docs/audit-log.md) gives queued decisions their leaves in `seq` order, then deletes them here.
CREATE TABLE IF NOT EXISTS audit_pending (
    decision_id TEXT COLLATE "C" PRIMARY KEY,
    seq BIGSERIAL NOT NULL UNIQUE
);

-- JetStream mode (docs/scale-out.md): records a worker could not store after their 202 (a conflict, another
-- tenant's session or id), keyed by their place in the stream, so a redelivered message is recorded once.
CREATE TABLE IF NOT EXISTS ingest_rejections (
    stream_seq BIGINT NOT NULL,
    item_index INTEGER NOT NULL,
    decision_id TEXT COLLATE "C" NOT NULL,
    session_id TEXT COLLATE "C" NOT NULL,
    tenant_id TEXT COLLATE "C",
    status TEXT COLLATE "C" NOT NULL,
    detail TEXT NOT NULL,
    rejected_at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (stream_seq, item_index)
);
CREATE INDEX IF NOT EXISTS idx_ingest_rejections_decision ON ingest_rejections (decision_id);
