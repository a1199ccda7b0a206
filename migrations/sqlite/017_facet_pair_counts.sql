-- Facet counts per value of a filter no index serves (cavra_ingest/store/counts.py, PAIRED): each facet
-- field (severity, repository, agent_id, policy_pack, action_type) is also counted among the decisions of
-- each policy pack, severity and action type, under the field key `field|given=value`. Facets over all
-- time filtered by a broad value of one of these (a policy pack on half the rows) then read count rows,
-- not every match. All-time rows only, per tenant and under any tenant ('*'), per outcome: day rows too
-- would cost each write about as much again as 013's rows. A decision without a tenant gets only the
-- any-tenant row (no filter asks for a NULL tenant). Same table as 013's counts, no new key.
--
-- The pair rows have a watermark of their own, `paired_rowid`: the writer folds them in once 1,000
-- decisions wait (cheaper per decision than every 32-row batch), reads count the rows above it, and the
-- store builds them for the decisions already in the file when it opens (docs/performance.md gives the
-- time at 5 M decisions). Rows counted and then deleted or changed move their pair rows by these triggers,
-- as 013's do theirs.
ALTER TABLE activity_decision_counts_state ADD COLUMN paired_rowid INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER IF NOT EXISTS trg_activity_decision_pair_counts_delete
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
END;
CREATE TRIGGER IF NOT EXISTS trg_activity_decision_pair_counts_update
AFTER UPDATE OF tenant_id, decision, severity, repository, agent_id, policy_pack, action_type ON activity_decisions
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
    INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
    SELECT 0, '', CASE WHEN s.rollup THEN '*' ELSE ifnull('=' || NEW.tenant_id, '') END, NEW.decision,
        f.field || '|' || f.given || '=' || CASE f.given WHEN 'policy_pack' THEN NEW.policy_pack WHEN 'severity' THEN NEW.severity ELSE NEW.action_type END,
        ifnull('=' || CASE f.field WHEN 'severity' THEN NEW.severity WHEN 'repository' THEN NEW.repository WHEN 'agent_id' THEN NEW.agent_id WHEN 'policy_pack' THEN NEW.policy_pack ELSE NEW.action_type END, ''), 1
    FROM (SELECT 0 AS rollup UNION ALL SELECT 1) AS s,
        (SELECT 'severity' AS field, 'policy_pack' AS given UNION ALL SELECT 'repository' AS field, 'policy_pack' AS given UNION ALL SELECT 'agent_id' AS field, 'policy_pack' AS given UNION ALL SELECT 'action_type' AS field, 'policy_pack' AS given UNION ALL SELECT 'repository' AS field, 'severity' AS given UNION ALL SELECT 'agent_id' AS field, 'severity' AS given UNION ALL SELECT 'policy_pack' AS field, 'severity' AS given UNION ALL SELECT 'action_type' AS field, 'severity' AS given UNION ALL SELECT 'severity' AS field, 'action_type' AS given UNION ALL SELECT 'repository' AS field, 'action_type' AS given UNION ALL SELECT 'agent_id' AS field, 'action_type' AS given UNION ALL SELECT 'policy_pack' AS field, 'action_type' AS given) AS f
    WHERE CASE f.given WHEN 'policy_pack' THEN NEW.policy_pack WHEN 'severity' THEN NEW.severity ELSE NEW.action_type END IS NOT NULL AND (s.rollup OR NEW.tenant_id IS NOT NULL)
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
END;
