-- 1. Index diet: one B-tree per leading column. Four of CAVRA's single-column 004 indexes were prefixes
--    of 006's composites, so every insert paid for both. Each pair becomes one index that keeps CAVRA's
--    NAME (CAVRA's store creates its indexes IF NOT EXISTS by name, so it finds these and adds nothing)
--    and 006's columns (a composite that starts with CAVRA's column serves CAVRA's queries on it).
--    Kept as they were: CAVRA's `policy` and `decision` (nothing else starts with their column) and our
--    `correlation` index. 12 B-trees per inserted decision become 9 (docs/performance.md).
DROP INDEX IF EXISTS idx_activity_decisions_time;
DROP INDEX IF EXISTS idx_activity_decisions_timestamp;
CREATE INDEX idx_activity_decisions_timestamp
    ON activity_decisions(
        timestamp DESC, decision_id, decision, severity, tenant_id, workspace_id,
        agent_id, repository, policy_pack, action_type, rule_id
    );
DROP INDEX IF EXISTS idx_activity_decisions_agent_time;
DROP INDEX IF EXISTS idx_activity_decisions_agent;
CREATE INDEX idx_activity_decisions_agent ON activity_decisions(agent_id, timestamp DESC, decision_id);
DROP INDEX IF EXISTS idx_activity_decisions_repository_time;
DROP INDEX IF EXISTS idx_activity_decisions_repository;
CREATE INDEX idx_activity_decisions_repository ON activity_decisions(repository, timestamp DESC, decision_id);
DROP INDEX IF EXISTS idx_activity_decisions_session_time;
DROP INDEX IF EXISTS idx_activity_decisions_session;
CREATE INDEX idx_activity_decisions_session ON activity_decisions(session_id, timestamp, decision_id);
DROP INDEX IF EXISTS idx_activity_sessions_recent;
DROP INDEX IF EXISTS idx_activity_sessions_updated;
CREATE INDEX idx_activity_sessions_updated ON activity_sessions(updated_at DESC, session_id);

-- 2. Decision counts per time bucket, tenant, outcome and field value (cavra_ingest/store/counts.py), so
--    facets and totals over broad filters read a few thousand count rows instead of millions of decisions.
--    `span` is the bucket's length as a prefix of the normalised timestamp (0: all time, 10: a UTC day);
--    `decision` is a key too (the console's usual filter), and the decision facet and the total are the
--    sums of the `severity` rows (each decision counts once per field). `tenant` and `value` hold '' for
--    NULL and '=' || the value otherwise, so NULL is a key like any other; all-time rows are also kept
--    under the tenant '*' (any tenant), so an unfiltered question reads one row per value. The writer adds
--    each batch's counts in its transaction; rows another program inserts (CAVRA writing straight into
--    the file) are found by rowid above `counted_rowid` and folded in.
CREATE TABLE IF NOT EXISTS activity_decision_counts (
    span INTEGER NOT NULL,
    bucket TEXT NOT NULL,
    tenant TEXT NOT NULL,
    decision TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (span, field, bucket, tenant, value, decision)
) WITHOUT ROWID;

-- One row: the highest activity_decisions rowid the counts include. 0 until the counts module
-- builds them (at open, from the decisions already in the file).
CREATE TABLE IF NOT EXISTS activity_decision_counts_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    counted_rowid INTEGER NOT NULL
);
INSERT OR IGNORE INTO activity_decision_counts_state (id, counted_rowid) VALUES (1, 0);

-- Rows already counted that are deleted (prune) or changed (CAVRA overwrites a decision in place, 007's
-- triggers rewrite its time) move their counts in the same statement: plain SQL, so CAVRA's process runs
-- them too. Inserts are not triggered (per-row triggers cost 2.9x the insert CPU): the writer counts each
-- batch at once, and anything inserted behind its back is found by rowid (counts.py).
CREATE TRIGGER IF NOT EXISTS trg_activity_decision_counts_delete
AFTER DELETE ON activity_decisions
WHEN OLD.rowid <= (SELECT counted_rowid FROM activity_decision_counts_state WHERE id = 1)
BEGIN
    INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
    SELECT s.span, substr(OLD.timestamp, 1, s.span), CASE WHEN s.rollup THEN '*' ELSE ifnull('=' || OLD.tenant_id, '') END, OLD.decision, f.field,
        ifnull('=' || CASE f.field WHEN 'severity' THEN OLD.severity WHEN 'repository' THEN OLD.repository WHEN 'agent_id' THEN OLD.agent_id WHEN 'policy_pack' THEN OLD.policy_pack WHEN 'action_type' THEN OLD.action_type WHEN 'workspace_id' THEN OLD.workspace_id ELSE OLD.rule_id END, ''), -1
    FROM (SELECT 10 AS span, 0 AS rollup UNION ALL SELECT 0, 0 UNION ALL SELECT 0, 1) AS s, (SELECT 'severity' AS field UNION ALL SELECT 'repository' AS field UNION ALL SELECT 'agent_id' AS field UNION ALL SELECT 'policy_pack' AS field UNION ALL SELECT 'action_type' AS field UNION ALL SELECT 'workspace_id' AS field UNION ALL SELECT 'rule_id' AS field) AS f WHERE 1
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER IF NOT EXISTS trg_activity_decision_counts_update
AFTER UPDATE OF timestamp, tenant_id, decision, severity, repository, agent_id, policy_pack, action_type, workspace_id, rule_id ON activity_decisions
WHEN OLD.rowid <= (SELECT counted_rowid FROM activity_decision_counts_state WHERE id = 1)
BEGIN
    INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
    SELECT s.span, substr(OLD.timestamp, 1, s.span), CASE WHEN s.rollup THEN '*' ELSE ifnull('=' || OLD.tenant_id, '') END, OLD.decision, f.field,
        ifnull('=' || CASE f.field WHEN 'severity' THEN OLD.severity WHEN 'repository' THEN OLD.repository WHEN 'agent_id' THEN OLD.agent_id WHEN 'policy_pack' THEN OLD.policy_pack WHEN 'action_type' THEN OLD.action_type WHEN 'workspace_id' THEN OLD.workspace_id ELSE OLD.rule_id END, ''), -1
    FROM (SELECT 10 AS span, 0 AS rollup UNION ALL SELECT 0, 0 UNION ALL SELECT 0, 1) AS s, (SELECT 'severity' AS field UNION ALL SELECT 'repository' AS field UNION ALL SELECT 'agent_id' AS field UNION ALL SELECT 'policy_pack' AS field UNION ALL SELECT 'action_type' AS field UNION ALL SELECT 'workspace_id' AS field UNION ALL SELECT 'rule_id' AS field) AS f WHERE 1
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
    INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
    SELECT s.span, substr(NEW.timestamp, 1, s.span), CASE WHEN s.rollup THEN '*' ELSE ifnull('=' || NEW.tenant_id, '') END, NEW.decision, f.field,
        ifnull('=' || CASE f.field WHEN 'severity' THEN NEW.severity WHEN 'repository' THEN NEW.repository WHEN 'agent_id' THEN NEW.agent_id WHEN 'policy_pack' THEN NEW.policy_pack WHEN 'action_type' THEN NEW.action_type WHEN 'workspace_id' THEN NEW.workspace_id ELSE NEW.rule_id END, ''), 1
    FROM (SELECT 10 AS span, 0 AS rollup UNION ALL SELECT 0, 0 UNION ALL SELECT 0, 1) AS s, (SELECT 'severity' AS field UNION ALL SELECT 'repository' AS field UNION ALL SELECT 'agent_id' AS field UNION ALL SELECT 'policy_pack' AS field UNION ALL SELECT 'action_type' AS field UNION ALL SELECT 'workspace_id' AS field UNION ALL SELECT 'rule_id' AS field) AS f WHERE 1
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
END;
