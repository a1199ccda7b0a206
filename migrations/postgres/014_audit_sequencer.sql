-- Without a global write lock, concurrent transactions commit in no order the writer can see, so a
-- decision's transaction no longer numbers its leaf: it queues the decision here, and one sequencer at a
-- time (docs/audit-log.md) gives queued decisions their leaves in `seq` order, then deletes them here.
CREATE TABLE IF NOT EXISTS audit_pending (
    decision_id TEXT COLLATE "C" PRIMARY KEY,
    seq BIGSERIAL NOT NULL UNIQUE
);
