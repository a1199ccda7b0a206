-- All-time decision counts summed over the outcomes (cavra_ingest/store/counts.py, ROLLED): for each facet
-- field but the decision (severity, repository, agent_id, policy_pack, action_type), per tenant and under
-- any tenant ('*'), one row per value under the outcome '*' (no real outcome is '*'). Facets and totals
-- without an outcome filter read these: the console's default view at 5 M decisions read 128 k repository
-- rows (one per outcome and repository) to sum and sort them; now it reads the top ten of one row per
-- repository from the partial index below, in count order (docs/performance.md, "Console first paint").
-- Same table and key as 013's counts; the decision facet still reads the `severity` rows per outcome.
--
-- The sums of the decisions already counted, from their per-outcome rows (exact as those are: every
-- decision at or below the watermark); the writer folds the rest in with the sums (ADD_DELTA).
INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
SELECT 0, '', tenant, '*', field, value, sum(n) FROM activity_decision_counts
WHERE span = 0 AND bucket = '' AND field IN ('severity', 'repository', 'agent_id', 'policy_pack', 'action_type') AND decision != '*'
GROUP BY field, tenant, value
HAVING sum(n) != 0;

-- The sums of one field and tenant key in count order: a top ten is its first ten entries. Partial, so the
-- per-outcome and day rows (which every batch changes) pay nothing for it.
CREATE INDEX IF NOT EXISTS idx_activity_decision_counts_summed
    ON activity_decision_counts(field, tenant, n DESC, value) WHERE span = 0 AND decision = '*';

-- Rows counted and then deleted or changed move their sums too: 018's triggers with two more sets of
-- rows (s.summed), in the same trigger so the delete still lowers the watermark after moving every count.
DROP TRIGGER IF EXISTS trg_activity_decision_counts_delete;
DROP TRIGGER IF EXISTS trg_activity_decision_counts_update;

CREATE TRIGGER trg_activity_decision_counts_delete
AFTER DELETE ON activity_decisions
WHEN OLD.rowid <= (SELECT counted_rowid FROM activity_decision_counts_state WHERE id = 1)
BEGIN
    INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
    SELECT s.span, substr(OLD.timestamp, 1, s.span), CASE WHEN s.rollup THEN '*' ELSE ifnull('=' || OLD.tenant_id, '') END,
        CASE WHEN s.summed THEN '*' ELSE OLD.decision END, f.field,
        ifnull('=' || CASE f.field WHEN 'severity' THEN OLD.severity WHEN 'repository' THEN OLD.repository WHEN 'agent_id' THEN OLD.agent_id WHEN 'policy_pack' THEN OLD.policy_pack WHEN 'action_type' THEN OLD.action_type WHEN 'workspace_id' THEN OLD.workspace_id ELSE OLD.rule_id END, ''), -1
    FROM (SELECT 10 AS span, 0 AS rollup, 0 AS summed UNION ALL SELECT 0, 0, 0 UNION ALL SELECT 0, 1, 0 UNION ALL SELECT 0, 0, 1 UNION ALL SELECT 0, 1, 1) AS s, (SELECT 'severity' AS field UNION ALL SELECT 'repository' AS field UNION ALL SELECT 'agent_id' AS field UNION ALL SELECT 'policy_pack' AS field UNION ALL SELECT 'action_type' AS field UNION ALL SELECT 'workspace_id' AS field UNION ALL SELECT 'rule_id' AS field) AS f
    WHERE NOT s.summed OR f.field IN ('severity', 'repository', 'agent_id', 'policy_pack', 'action_type')
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
    UPDATE activity_decision_counts_state SET counted_rowid = (SELECT ifnull(max(rowid), 0) FROM activity_decisions)
    WHERE id = 1 AND counted_rowid > (SELECT ifnull(max(rowid), 0) FROM activity_decisions);
END;
CREATE TRIGGER trg_activity_decision_counts_update
AFTER UPDATE OF timestamp, tenant_id, decision, severity, repository, agent_id, policy_pack, action_type, workspace_id, rule_id ON activity_decisions
WHEN OLD.rowid <= (SELECT counted_rowid FROM activity_decision_counts_state WHERE id = 1)
BEGIN
    INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
    SELECT s.span, substr(OLD.timestamp, 1, s.span), CASE WHEN s.rollup THEN '*' ELSE ifnull('=' || OLD.tenant_id, '') END,
        CASE WHEN s.summed THEN '*' ELSE OLD.decision END, f.field,
        ifnull('=' || CASE f.field WHEN 'severity' THEN OLD.severity WHEN 'repository' THEN OLD.repository WHEN 'agent_id' THEN OLD.agent_id WHEN 'policy_pack' THEN OLD.policy_pack WHEN 'action_type' THEN OLD.action_type WHEN 'workspace_id' THEN OLD.workspace_id ELSE OLD.rule_id END, ''), -1
    FROM (SELECT 10 AS span, 0 AS rollup, 0 AS summed UNION ALL SELECT 0, 0, 0 UNION ALL SELECT 0, 1, 0 UNION ALL SELECT 0, 0, 1 UNION ALL SELECT 0, 1, 1) AS s, (SELECT 'severity' AS field UNION ALL SELECT 'repository' AS field UNION ALL SELECT 'agent_id' AS field UNION ALL SELECT 'policy_pack' AS field UNION ALL SELECT 'action_type' AS field UNION ALL SELECT 'workspace_id' AS field UNION ALL SELECT 'rule_id' AS field) AS f
    WHERE NOT s.summed OR f.field IN ('severity', 'repository', 'agent_id', 'policy_pack', 'action_type')
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
    INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
    SELECT s.span, substr(NEW.timestamp, 1, s.span), CASE WHEN s.rollup THEN '*' ELSE ifnull('=' || NEW.tenant_id, '') END,
        CASE WHEN s.summed THEN '*' ELSE NEW.decision END, f.field,
        ifnull('=' || CASE f.field WHEN 'severity' THEN NEW.severity WHEN 'repository' THEN NEW.repository WHEN 'agent_id' THEN NEW.agent_id WHEN 'policy_pack' THEN NEW.policy_pack WHEN 'action_type' THEN NEW.action_type WHEN 'workspace_id' THEN NEW.workspace_id ELSE NEW.rule_id END, ''), 1
    FROM (SELECT 10 AS span, 0 AS rollup, 0 AS summed UNION ALL SELECT 0, 0, 0 UNION ALL SELECT 0, 1, 0 UNION ALL SELECT 0, 0, 1 UNION ALL SELECT 0, 1, 1) AS s, (SELECT 'severity' AS field UNION ALL SELECT 'repository' AS field UNION ALL SELECT 'agent_id' AS field UNION ALL SELECT 'policy_pack' AS field UNION ALL SELECT 'action_type' AS field UNION ALL SELECT 'workspace_id' AS field UNION ALL SELECT 'rule_id' AS field) AS f
    WHERE NOT s.summed OR f.field IN ('severity', 'repository', 'agent_id', 'policy_pack', 'action_type')
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
END;
