-- CAVRA's names for the six 004 indexes older files name differently (the SQLite 007 does the same).
ALTER INDEX IF EXISTS idx_activity_sessions_agent_id RENAME TO idx_activity_sessions_agent;
ALTER INDEX IF EXISTS idx_activity_sessions_policy_pack RENAME TO idx_activity_sessions_policy;
ALTER INDEX IF EXISTS idx_activity_sessions_updated_at RENAME TO idx_activity_sessions_updated;
ALTER INDEX IF EXISTS idx_activity_decisions_session_id RENAME TO idx_activity_decisions_session;
ALTER INDEX IF EXISTS idx_activity_decisions_agent_id RENAME TO idx_activity_decisions_agent;
ALTER INDEX IF EXISTS idx_activity_decisions_policy_pack RENAME TO idx_activity_decisions_policy;
