-- Indexes shaped like the read queries, as in the SQLite 006: equality column, then time in listing
-- order, then id, so a filtered page is read in order and stops after `limit` rows. The time index
-- carries the facet, scope and rule fields (INCLUDE) so counts and facets over a window are index-only.
CREATE INDEX IF NOT EXISTS idx_activity_decisions_time
    ON activity_decisions (timestamp DESC, decision_id)
    INCLUDE (decision, severity, tenant_id, workspace_id, agent_id, repository, policy_pack, action_type, rule_id);

CREATE INDEX IF NOT EXISTS idx_activity_decisions_agent_time
    ON activity_decisions (agent_id, timestamp DESC, decision_id);
CREATE INDEX IF NOT EXISTS idx_activity_decisions_repository_time
    ON activity_decisions (repository, timestamp DESC, decision_id);

-- A session's timeline is read oldest first.
CREATE INDEX IF NOT EXISTS idx_activity_decisions_session_time
    ON activity_decisions (session_id, timestamp, decision_id);

CREATE INDEX IF NOT EXISTS idx_activity_decisions_correlation
    ON activity_decisions (correlation_id);

CREATE INDEX IF NOT EXISTS idx_activity_sessions_recent
    ON activity_sessions (updated_at DESC, session_id);
