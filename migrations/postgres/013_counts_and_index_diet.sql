-- The SQLite migration's index diet, so both stores keep one layout: each of CAVRA's single-column 004
-- indexes that a 006 composite starts with becomes that composite, under CAVRA's name.
-- (The decision counts of the SQLite migration are SQLite's only: PostgreSQL counts in parallel workers.)
DROP INDEX IF EXISTS idx_activity_decisions_time;
DROP INDEX IF EXISTS idx_activity_decisions_timestamp;
CREATE INDEX idx_activity_decisions_timestamp
    ON activity_decisions (timestamp DESC, decision_id)
    INCLUDE (decision, severity, tenant_id, workspace_id, agent_id, repository, policy_pack, action_type, rule_id);
DROP INDEX IF EXISTS idx_activity_decisions_agent_time;
DROP INDEX IF EXISTS idx_activity_decisions_agent;
CREATE INDEX idx_activity_decisions_agent ON activity_decisions (agent_id, timestamp DESC, decision_id);
DROP INDEX IF EXISTS idx_activity_decisions_repository_time;
DROP INDEX IF EXISTS idx_activity_decisions_repository;
CREATE INDEX idx_activity_decisions_repository ON activity_decisions (repository, timestamp DESC, decision_id);
DROP INDEX IF EXISTS idx_activity_decisions_session_time;
DROP INDEX IF EXISTS idx_activity_decisions_session;
CREATE INDEX idx_activity_decisions_session ON activity_decisions (session_id, timestamp, decision_id);
DROP INDEX IF EXISTS idx_activity_sessions_recent;
DROP INDEX IF EXISTS idx_activity_sessions_updated;
CREATE INDEX idx_activity_sessions_updated ON activity_sessions (updated_at DESC, session_id);
