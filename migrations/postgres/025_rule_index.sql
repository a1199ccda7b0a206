-- The SQLite migration's rule index, so both stores keep one layout: a rule filter's facets, histogram
-- and time bounds read that rule's entries (a window is a range of them), the facet fields included.
CREATE INDEX IF NOT EXISTS idx_activity_decisions_rule
    ON activity_decisions (rule_id, timestamp)
    INCLUDE (decision, severity, repository, agent_id, policy_pack, action_type, tenant_id, workspace_id);
