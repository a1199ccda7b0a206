-- Leaves whose decision `cavra-ingest prune` removed, recorded in the same transaction as the delete, so
-- `verify` tells a pruned decision (listed with its cut-off) from a deleted one. The leaf itself stays.
CREATE TABLE IF NOT EXISTS audit_pruned (
    leaf_index BIGINT PRIMARY KEY,
    decision_id TEXT COLLATE "C" NOT NULL,
    cutoff TEXT NOT NULL,
    pruned_at TEXT NOT NULL
);
