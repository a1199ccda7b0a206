-- SQLite gives a new row max(rowid) + 1, so deleting the newest counted decisions hands their rowids out
-- again, at or below the counts' watermarks: those new rows would never be counted. Each delete trigger
-- now also lowers its own watermark to the highest rowid left, after moving the deleted row's counts (in
-- the same trigger: SQLite does not promise an order between triggers, and a watermark lowered first
-- would skip that row's counts). Every row at or below a watermark stays counted, and every new rowid is
-- above it. One max(rowid) look-up per deleted counted row; plain SQL, so CAVRA's deletes run it too.
DROP TRIGGER IF EXISTS trg_activity_decision_counts_delete;
DROP TRIGGER IF EXISTS trg_activity_decision_pair_counts_delete;

CREATE TRIGGER trg_activity_decision_counts_delete
AFTER DELETE ON activity_decisions
WHEN OLD.rowid <= (SELECT counted_rowid FROM activity_decision_counts_state WHERE id = 1)
BEGIN
    INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
    SELECT s.span, substr(OLD.timestamp, 1, s.span), CASE WHEN s.rollup THEN '*' ELSE ifnull('=' || OLD.tenant_id, '') END, OLD.decision, f.field,
        ifnull('=' || CASE f.field WHEN 'severity' THEN OLD.severity WHEN 'repository' THEN OLD.repository WHEN 'agent_id' THEN OLD.agent_id WHEN 'policy_pack' THEN OLD.policy_pack WHEN 'action_type' THEN OLD.action_type WHEN 'workspace_id' THEN OLD.workspace_id ELSE OLD.rule_id END, ''), -1
    FROM (SELECT 10 AS span, 0 AS rollup UNION ALL SELECT 0, 0 UNION ALL SELECT 0, 1) AS s, (SELECT 'severity' AS field UNION ALL SELECT 'repository' AS field UNION ALL SELECT 'agent_id' AS field UNION ALL SELECT 'policy_pack' AS field UNION ALL SELECT 'action_type' AS field UNION ALL SELECT 'workspace_id' AS field UNION ALL SELECT 'rule_id' AS field) AS f WHERE 1
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
    UPDATE activity_decision_counts_state SET counted_rowid = (SELECT ifnull(max(rowid), 0) FROM activity_decisions)
    WHERE id = 1 AND counted_rowid > (SELECT ifnull(max(rowid), 0) FROM activity_decisions);
END;
CREATE TRIGGER trg_activity_decision_pair_counts_delete
AFTER DELETE ON activity_decisions
WHEN OLD.rowid <= (SELECT paired_rowid FROM activity_decision_counts_state WHERE id = 1)
BEGIN
    INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
    SELECT 0, '', CASE WHEN s.rollup THEN '*' ELSE ifnull('=' || OLD.tenant_id, '') END, OLD.decision,
        f.field || '|' || f.given || '=' || CASE f.given WHEN 'policy_pack' THEN OLD.policy_pack WHEN 'severity' THEN OLD.severity ELSE OLD.action_type END,
        ifnull('=' || CASE f.field WHEN 'severity' THEN OLD.severity WHEN 'repository' THEN OLD.repository WHEN 'agent_id' THEN OLD.agent_id WHEN 'policy_pack' THEN OLD.policy_pack ELSE OLD.action_type END, ''), -1
    FROM (SELECT 0 AS rollup UNION ALL SELECT 1) AS s,
        (SELECT 'severity' AS field, 'policy_pack' AS given UNION ALL SELECT 'repository' AS field, 'policy_pack' AS given UNION ALL SELECT 'agent_id' AS field, 'policy_pack' AS given UNION ALL SELECT 'action_type' AS field, 'policy_pack' AS given UNION ALL SELECT 'repository' AS field, 'severity' AS given UNION ALL SELECT 'agent_id' AS field, 'severity' AS given UNION ALL SELECT 'policy_pack' AS field, 'severity' AS given UNION ALL SELECT 'action_type' AS field, 'severity' AS given UNION ALL SELECT 'severity' AS field, 'action_type' AS given UNION ALL SELECT 'repository' AS field, 'action_type' AS given UNION ALL SELECT 'agent_id' AS field, 'action_type' AS given UNION ALL SELECT 'policy_pack' AS field, 'action_type' AS given) AS f
    WHERE CASE f.given WHEN 'policy_pack' THEN OLD.policy_pack WHEN 'severity' THEN OLD.severity ELSE OLD.action_type END IS NOT NULL AND (s.rollup OR OLD.tenant_id IS NOT NULL)
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
    UPDATE activity_decision_counts_state SET paired_rowid = (SELECT ifnull(max(rowid), 0) FROM activity_decisions)
    WHERE id = 1 AND paired_rowid > (SELECT ifnull(max(rowid), 0) FROM activity_decisions);
END;
