-- The tamper-evident audit log (docs/audit-log.md): one leaf per created decision, in commit order,
-- written in the decision's own transaction; signed checkpoints, every one kept; and the hashes of
-- complete aligned subtrees of 256 leaves and more, so a proof reads O(log n) rows.
CREATE TABLE IF NOT EXISTS audit_leaves (
    leaf_index BIGINT PRIMARY KEY,
    decision_id TEXT COLLATE "C" NOT NULL UNIQUE,
    leaf_hash BYTEA NOT NULL
);

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    tree_size BIGINT PRIMARY KEY,
    root_hash BYTEA NOT NULL,
    note TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- level L holds the hash of leaves [node_index * 2^L, (node_index + 1) * 2^L); only L >= 8 is kept.
CREATE TABLE IF NOT EXISTS audit_subtrees (
    level INTEGER NOT NULL,
    node_index BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (level, node_index)
);
