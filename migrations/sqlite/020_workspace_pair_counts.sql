-- Facets over all time filtered by a workspace read pair rows too (store/counts.py, PAIRED): a broad
-- workspace read every match through the time index (650 ms at 5 M decisions). Each facet field
-- (severity, repository, agent_id, policy_pack, action_type) is now also counted among the decisions of
-- each workspace_id, as 017 does for policy_pack, severity and action_type. Rules were measured and left
-- out: their pair rows outnumbered the decisions (3.4 M at 1 M decisions, a workspace's 0.13 M) and
-- doubled what the pair rows cost the writer (docs/performance.md).
--
-- The pair triggers of 017 (update) and 018 (delete) name the paired fields, so both are made again with
-- workspace_id. The pair rows are then dropped and their watermark set to 0: the server's background
-- counts folder rebuilds them a step at a time (CAVRA_COUNTS_FOLD_ROWS), and reads with a paired filter
-- count the matches from the table meanwhile.
DROP TRIGGER IF EXISTS trg_activity_decision_pair_counts_delete;
DROP TRIGGER IF EXISTS trg_activity_decision_pair_counts_update;

CREATE TRIGGER trg_activity_decision_pair_counts_delete
AFTER DELETE ON activity_decisions
WHEN OLD.rowid <= (SELECT paired_rowid FROM activity_decision_counts_state WHERE id = 1)
BEGIN
    INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
    SELECT 0, '', CASE WHEN s.rollup THEN '*' ELSE ifnull('=' || OLD.tenant_id, '') END, OLD.decision,
        f.field || '|' || f.given || '=' || CASE f.given WHEN 'policy_pack' THEN OLD.policy_pack WHEN 'severity' THEN OLD.severity WHEN 'action_type' THEN OLD.action_type ELSE OLD.workspace_id END,
        ifnull('=' || CASE f.field WHEN 'severity' THEN OLD.severity WHEN 'repository' THEN OLD.repository WHEN 'agent_id' THEN OLD.agent_id WHEN 'policy_pack' THEN OLD.policy_pack ELSE OLD.action_type END, ''), -1
    FROM (SELECT 0 AS rollup UNION ALL SELECT 1) AS s,
        (SELECT 'severity' AS field, 'policy_pack' AS given UNION ALL SELECT 'repository' AS field, 'policy_pack' AS given UNION ALL SELECT 'agent_id' AS field, 'policy_pack' AS given UNION ALL SELECT 'action_type' AS field, 'policy_pack' AS given UNION ALL SELECT 'repository' AS field, 'severity' AS given UNION ALL SELECT 'agent_id' AS field, 'severity' AS given UNION ALL SELECT 'policy_pack' AS field, 'severity' AS given UNION ALL SELECT 'action_type' AS field, 'severity' AS given UNION ALL SELECT 'severity' AS field, 'action_type' AS given UNION ALL SELECT 'repository' AS field, 'action_type' AS given UNION ALL SELECT 'agent_id' AS field, 'action_type' AS given UNION ALL SELECT 'policy_pack' AS field, 'action_type' AS given UNION ALL SELECT 'severity' AS field, 'workspace_id' AS given UNION ALL SELECT 'repository' AS field, 'workspace_id' AS given UNION ALL SELECT 'agent_id' AS field, 'workspace_id' AS given UNION ALL SELECT 'policy_pack' AS field, 'workspace_id' AS given UNION ALL SELECT 'action_type' AS field, 'workspace_id' AS given) AS f
    WHERE CASE f.given WHEN 'policy_pack' THEN OLD.policy_pack WHEN 'severity' THEN OLD.severity WHEN 'action_type' THEN OLD.action_type ELSE OLD.workspace_id END IS NOT NULL AND (s.rollup OR OLD.tenant_id IS NOT NULL)
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
    UPDATE activity_decision_counts_state SET paired_rowid = (SELECT ifnull(max(rowid), 0) FROM activity_decisions)
    WHERE id = 1 AND paired_rowid > (SELECT ifnull(max(rowid), 0) FROM activity_decisions);
END;
CREATE TRIGGER trg_activity_decision_pair_counts_update
AFTER UPDATE OF tenant_id, decision, severity, repository, agent_id, policy_pack, action_type, workspace_id
ON activity_decisions
WHEN OLD.rowid <= (SELECT paired_rowid FROM activity_decision_counts_state WHERE id = 1)
BEGIN
    INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
    SELECT 0, '', CASE WHEN s.rollup THEN '*' ELSE ifnull('=' || OLD.tenant_id, '') END, OLD.decision,
        f.field || '|' || f.given || '=' || CASE f.given WHEN 'policy_pack' THEN OLD.policy_pack WHEN 'severity' THEN OLD.severity WHEN 'action_type' THEN OLD.action_type ELSE OLD.workspace_id END,
        ifnull('=' || CASE f.field WHEN 'severity' THEN OLD.severity WHEN 'repository' THEN OLD.repository WHEN 'agent_id' THEN OLD.agent_id WHEN 'policy_pack' THEN OLD.policy_pack ELSE OLD.action_type END, ''), -1
    FROM (SELECT 0 AS rollup UNION ALL SELECT 1) AS s,
        (SELECT 'severity' AS field, 'policy_pack' AS given UNION ALL SELECT 'repository' AS field, 'policy_pack' AS given UNION ALL SELECT 'agent_id' AS field, 'policy_pack' AS given UNION ALL SELECT 'action_type' AS field, 'policy_pack' AS given UNION ALL SELECT 'repository' AS field, 'severity' AS given UNION ALL SELECT 'agent_id' AS field, 'severity' AS given UNION ALL SELECT 'policy_pack' AS field, 'severity' AS given UNION ALL SELECT 'action_type' AS field, 'severity' AS given UNION ALL SELECT 'severity' AS field, 'action_type' AS given UNION ALL SELECT 'repository' AS field, 'action_type' AS given UNION ALL SELECT 'agent_id' AS field, 'action_type' AS given UNION ALL SELECT 'policy_pack' AS field, 'action_type' AS given UNION ALL SELECT 'severity' AS field, 'workspace_id' AS given UNION ALL SELECT 'repository' AS field, 'workspace_id' AS given UNION ALL SELECT 'agent_id' AS field, 'workspace_id' AS given UNION ALL SELECT 'policy_pack' AS field, 'workspace_id' AS given UNION ALL SELECT 'action_type' AS field, 'workspace_id' AS given) AS f
    WHERE CASE f.given WHEN 'policy_pack' THEN OLD.policy_pack WHEN 'severity' THEN OLD.severity WHEN 'action_type' THEN OLD.action_type ELSE OLD.workspace_id END IS NOT NULL AND (s.rollup OR OLD.tenant_id IS NOT NULL)
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
    INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
    SELECT 0, '', CASE WHEN s.rollup THEN '*' ELSE ifnull('=' || NEW.tenant_id, '') END, NEW.decision,
        f.field || '|' || f.given || '=' || CASE f.given WHEN 'policy_pack' THEN NEW.policy_pack WHEN 'severity' THEN NEW.severity WHEN 'action_type' THEN NEW.action_type ELSE NEW.workspace_id END,
        ifnull('=' || CASE f.field WHEN 'severity' THEN NEW.severity WHEN 'repository' THEN NEW.repository WHEN 'agent_id' THEN NEW.agent_id WHEN 'policy_pack' THEN NEW.policy_pack ELSE NEW.action_type END, ''), 1
    FROM (SELECT 0 AS rollup UNION ALL SELECT 1) AS s,
        (SELECT 'severity' AS field, 'policy_pack' AS given UNION ALL SELECT 'repository' AS field, 'policy_pack' AS given UNION ALL SELECT 'agent_id' AS field, 'policy_pack' AS given UNION ALL SELECT 'action_type' AS field, 'policy_pack' AS given UNION ALL SELECT 'repository' AS field, 'severity' AS given UNION ALL SELECT 'agent_id' AS field, 'severity' AS given UNION ALL SELECT 'policy_pack' AS field, 'severity' AS given UNION ALL SELECT 'action_type' AS field, 'severity' AS given UNION ALL SELECT 'severity' AS field, 'action_type' AS given UNION ALL SELECT 'repository' AS field, 'action_type' AS given UNION ALL SELECT 'agent_id' AS field, 'action_type' AS given UNION ALL SELECT 'policy_pack' AS field, 'action_type' AS given UNION ALL SELECT 'severity' AS field, 'workspace_id' AS given UNION ALL SELECT 'repository' AS field, 'workspace_id' AS given UNION ALL SELECT 'agent_id' AS field, 'workspace_id' AS given UNION ALL SELECT 'policy_pack' AS field, 'workspace_id' AS given UNION ALL SELECT 'action_type' AS field, 'workspace_id' AS given) AS f
    WHERE CASE f.given WHEN 'policy_pack' THEN NEW.policy_pack WHEN 'severity' THEN NEW.severity WHEN 'action_type' THEN NEW.action_type ELSE NEW.workspace_id END IS NOT NULL AND (s.rollup OR NEW.tenant_id IS NOT NULL)
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
END;

DELETE FROM activity_decision_counts WHERE span = 0 AND bucket = '' AND field LIKE '%|%';
UPDATE activity_decision_counts_state SET paired_rowid = 0 WHERE id = 1;
